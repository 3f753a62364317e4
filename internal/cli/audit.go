package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/paths"
	ucli "github.com/urfave/cli/v2"
)

func auditCommand() *ucli.Command {
	return &ucli.Command{
		Name: "audit", Usage: "show the audit log",
		Description: "Reads the broker's audit log file (it needs read access to it: root or the broker's user).",
		Flags: []ucli.Flag{
			jsonFlag(),
			&ucli.StringFlag{Name: "file", Usage: "audit log `FILE` (default: audit.log in the default data directory or $COMMY_DATA_DIR)"},
			&ucli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new records until interrupted"},
		},
		Action: func(c *ucli.Context) error {
			if _, err := args(c, 0, 0); err != nil {
				return err
			}
			path := c.String("file")
			if path == "" {
				dir, err := paths.DataDir()
				if err != nil {
					return err
				}
				path = filepath.Join(dir, "audit.log")
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			ctx, stop := signalContext(c.Context)
			defer stop()
			w := c.App.Writer
			if !c.Bool("json") {
				fmt.Fprintf(w, auditColumns, "TIME", "EVENT", "PID", "UID", "WHAT", "DETAIL")
			}
			var pending []byte
			buf := make([]byte, 64<<10)
			for {
				n, err := f.Read(buf)
				pending = append(pending, buf[:n]...)
				for {
					i := strings.IndexByte(string(pending), '\n')
					if i < 0 {
						break
					}
					if perr := printRecord(w, pending[:i], c.Bool("json")); perr != nil {
						return perr
					}
					pending = pending[i+1:]
				}
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				if n > 0 {
					continue
				}
				if !c.Bool("follow") {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	}
}

// The audit table's columns have fixed widths, so that lines printed by
// `audit -f` at different times line up; a longer value pushes the rest of
// its line only.
const (
	auditColumns = "%-27s  %-23s  %7s  %5s  %-24s  %s\n"
	auditTime    = "2006-01-02T15:04:05.000000Z07:00"
)

func printRecord(w io.Writer, line []byte, asJSON bool) error {
	if asJSON {
		_, err := fmt.Fprintf(w, "%s\n", line)
		return err
	}
	var r broker.Record
	if err := json.Unmarshal(line, &r); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	uid := "-"
	if r.UID != nil {
		uid = fmt.Sprint(*r.UID)
	}
	// Names as people type them (acme/orders); the service id when that is
	// all the record has.
	what := r.ServiceID
	if r.Tenant != "" {
		what = r.Tenant
		if r.Service != "" {
			what += "/" + r.Service
		}
	}
	var detail []string
	for _, kv := range [][2]string{
		{"request", r.Request}, {"vars", strings.Join(r.Variables, ",")}, {"code", r.Code}, {"right", r.Right},
		{"access", r.Access}, {"path", r.Path}, {"exe", r.Exe}, {"comm", r.Comm},
	} {
		if kv[1] != "" {
			detail = append(detail, kv[0]+"="+kv[1])
		}
	}
	if r.Bytes > 0 {
		detail = append(detail, fmt.Sprintf("bytes=%d", r.Bytes))
	}
	if r.Result != nil {
		detail = append(detail, fmt.Sprintf("result=%d", *r.Result))
	}
	if r.Broker {
		detail = append(detail, "broker")
	}
	t := r.Time
	if tm, err := time.Parse(time.RFC3339Nano, r.Time); err == nil {
		t = tm.UTC().Format(auditTime)
	}
	_, err := fmt.Fprintf(w, auditColumns, t, r.Event, strconv.Itoa(int(r.PID)), uid, what, strings.Join(detail, " "))
	return err
}
