package broker

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord appends r as one line of JSON, byte for byte what
// encoding/json makes of it, without reflection: the audit writer encodes
// every audited request, and json.Marshal took a sixth of the broker's CPU
// under a write load. A record with no Time gets at, formatted here rather
// than on the request path.
func appendRecord(buf []byte, r Record, at time.Time) []byte {
	buf = append(buf, `{"time":`...)
	if r.Time == "" && !at.IsZero() {
		buf = append(buf, '"')
		buf = at.AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, '"')
	} else {
		buf = appendJSONString(buf, r.Time)
	}
	buf = append(buf, `,"event":`...)
	buf = appendJSONString(buf, r.Event)
	if r.ClientID != 0 {
		buf = strconv.AppendUint(append(buf, `,"client_id":`...), r.ClientID, 10)
	}
	if r.PID != 0 {
		buf = strconv.AppendInt(append(buf, `,"pid":`...), int64(r.PID), 10)
	}
	if r.UID != nil {
		buf = strconv.AppendUint(append(buf, `,"uid":`...), uint64(*r.UID), 10)
	}
	if r.GID != nil {
		buf = strconv.AppendUint(append(buf, `,"gid":`...), uint64(*r.GID), 10)
	}
	buf = appendField(buf, `,"exe":`, r.Exe)
	buf = appendField(buf, `,"comm":`, r.Comm)
	buf = appendField(buf, `,"request":`, r.Request)
	buf = appendField(buf, `,"tenant":`, r.Tenant)
	buf = appendField(buf, `,"service":`, r.Service)
	buf = appendField(buf, `,"service_id":`, r.ServiceID)
	if len(r.Variables) > 0 {
		buf = append(buf, `,"variables":[`...)
		for i, v := range r.Variables {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, v)
		}
		buf = append(buf, ']')
	}
	if r.Bytes != 0 {
		buf = strconv.AppendInt(append(buf, `,"bytes":`...), int64(r.Bytes), 10)
	}
	buf = appendField(buf, `,"right":`, r.Right)
	buf = appendField(buf, `,"code":`, r.Code)
	buf = appendField(buf, `,"reason":`, r.Reason)
	buf = appendField(buf, `,"access":`, r.Access)
	buf = appendField(buf, `,"path":`, r.Path)
	if r.Result != nil {
		buf = strconv.AppendInt(append(buf, `,"result":`...), *r.Result, 10)
	}
	if r.Broker {
		buf = append(buf, `,"broker":true`...)
	}
	if r.Count != 0 {
		buf = strconv.AppendUint(append(buf, `,"count":`...), r.Count, 10)
	}
	return append(buf, "}\n"...)
}

// appendField appends an omitempty string field: key and value, or nothing.
func appendField(buf []byte, key, s string) []byte {
	if s == "" {
		return buf
	}
	return appendJSONString(append(buf, key...), s)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as encoding/json quotes it: control
// characters, quotes, backslashes and the HTML-sensitive <, > and & escaped,
// invalid UTF-8 as U+FFFD, and U+2028 and U+2029 escaped.
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch b {
			case '"', '\\':
				buf = append(buf, '\\', b)
			case '\b':
				buf = append(buf, '\\', 'b')
			case '\f':
				buf = append(buf, '\\', 'f')
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			buf = append(append(buf, s[start:i]...), `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			buf = append(append(buf, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(buf, s[start:]...), '"')
}
