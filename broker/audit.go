package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Record is one line of the audit log.
type Record struct {
	Time      string   `json:"time"` // RFC 3339 with nanoseconds
	Event     string   `json:"event"`
	ClientID  uint64   `json:"client_id,omitempty"`
	PID       int32    `json:"pid,omitempty"`
	UID       *uint32  `json:"uid,omitempty"`
	GID       *uint32  `json:"gid,omitempty"`
	Exe       string   `json:"exe,omitempty"`
	Comm      string   `json:"comm,omitempty"`
	Request   string   `json:"request,omitempty"`
	Tenant    string   `json:"tenant,omitempty"`
	Service   string   `json:"service,omitempty"`
	ServiceID string   `json:"service_id,omitempty"`
	Variables []string `json:"variables,omitempty"`
	Bytes     int      `json:"bytes,omitempty"`
	Right     string   `json:"right,omitempty"`
	Code      string   `json:"code,omitempty"`
	Reason    string   `json:"reason,omitempty"`
	Access    string   `json:"access,omitempty"`
	Path      string   `json:"path,omitempty"`
	Result    *int64   `json:"result,omitempty"`
	Broker    bool     `json:"broker,omitempty"`
}

// Audit event names.
const (
	EventConnect     = "connect"
	EventDisconnect  = "disconnect"
	EventFilePath    = "get_service_file_path"
	EventWrite       = "write_variable"
	EventReport      = "report_variable_changes"
	EventDenied      = "denied"
	EventAdmin       = "admin"
	EventFileAccess  = "file_access"
	auditQueueLength = 4096
)

// Audit appends Records to a JSON-lines file from one goroutine, in batches.
// A failed write is logged at error level and counted, never dropped
// silently. It is safe for concurrent use.
type Audit struct {
	w      io.WriteCloser
	log    *slog.Logger
	ch     chan Record
	done   chan struct{}
	errs   atomic.Uint64
	once   sync.Once
	mu     sync.RWMutex // held for reading while sending on ch
	closed bool
}

// OpenAudit opens (appending, mode 0600) the audit log at path.
func OpenAudit(path string, log *slog.Logger) (*Audit, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("broker: audit log: %w", err)
	}
	return newAudit(f, log), nil
}

func newAudit(w io.WriteCloser, log *slog.Logger) *Audit {
	a := &Audit{w: w, log: log, ch: make(chan Record, auditQueueLength), done: make(chan struct{})}
	go a.run()
	return a
}

// Log queues r, stamping its time. It blocks when the queue is full rather
// than lose a record.
func (a *Audit) Log(r Record) {
	if a == nil {
		return
	}
	r.Time = time.Now().Format(time.RFC3339Nano)
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		return
	}
	a.ch <- r
}

// Errors is the number of records that could not be written.
func (a *Audit) Errors() uint64 {
	if a == nil {
		return 0
	}
	return a.errs.Load()
}

func (a *Audit) run() {
	defer close(a.done)
	var buf []byte
	for r := range a.ch {
		buf, n := appendRecord(buf[:0], r), 1
	drain:
		for len(buf) < 1<<20 {
			select {
			case r2, ok := <-a.ch:
				if !ok {
					break drain
				}
				buf = appendRecord(buf, r2)
				n++
			default:
				break drain
			}
		}
		a.write(buf, n)
	}
}

func appendRecord(buf []byte, r Record) []byte {
	line, err := json.Marshal(r)
	if err != nil {
		return buf // a Record always marshals
	}
	return append(append(buf, line...), '\n')
}

func (a *Audit) write(buf []byte, n int) {
	if len(buf) == 0 {
		return
	}
	if _, err := a.w.Write(buf); err != nil {
		// Log before counting: whoever sees the count also finds the log line.
		a.log.Error("audit log write failed: records lost", "records", n, "err", err)
		a.errs.Add(uint64(n))
	}
}

// Close writes what is queued and closes the file. It is safe to call more
// than once.
func (a *Audit) Close() error {
	if a == nil {
		return nil
	}
	var err error
	a.once.Do(func() {
		a.mu.Lock()
		a.closed = true
		close(a.ch)
		a.mu.Unlock()
		<-a.done
		err = a.w.Close()
	})
	return err
}

// logAudit counts r by its event and queues it on the audit log.
func (b *Broker) logAudit(r Record) {
	b.stats.audited(r.Event)
	b.audit.Log(r)
}

// ReadAudit decodes the records of an audit log.
func ReadAudit(r io.Reader, fn func(Record) error) error {
	dec := json.NewDecoder(r)
	for {
		var rec Record
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("broker: audit log: %w", err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}
