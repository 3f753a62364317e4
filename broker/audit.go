package broker

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	Count     uint64   `json:"count,omitempty"` // records a summary stands for (suppressed, audit_lost)
}

// queued is a Record waiting for the writer, which formats its time.
type queued struct {
	r  Record
	at time.Time
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
	EventRevoked     = "revoked"    // a subscription ended by a policy reload
	EventSuppressed  = "suppressed" // denials or connections of one uid not recorded one by one; see Config.AuditCoalesce
	EventAuditLost   = "audit_lost" // records that could not be written, once the log is writable again
	auditQueueLength = 4096
)

// Audit appends Records to a JSON-lines file from one goroutine, in batches.
// A failed write is logged at error level and counted, never dropped
// silently. It is safe for concurrent use.
//
// Log does not wake the writer for each record, which would put a cross-CPU
// wake-up into every audited request: the first record queued after the
// writer went idle arms a timer of auditFlushDelay, and the writer runs when
// it fires, or at once when auditBatch records are waiting. Records thus
// reach the file at most auditFlushDelay after they were logged, and
// requests that come a few milliseconds apart share one wake-up and write.
type Audit struct {
	w     io.WriteCloser
	log   *slog.Logger
	errs  atomic.Uint64
	once  sync.Once
	kick  chan struct{} // capacity 1: wakes the writer at once
	timer *time.Timer   // wakes the writer auditFlushDelay after the first record
	done  chan struct{}

	lost    uint64      // records not written since the last success; writer goroutine only
	failing atomic.Bool // the last write failed

	mu     sync.Mutex
	q      []queued   // waiting for the writer
	room   *sync.Cond // on mu: the writer took q
	closed bool
}

// Audit queue bounds: the writer runs at once when auditBatch records wait,
// and Log blocks while auditQueueLength do. Each run of the writer costs the
// broker a wake-up, a write and the runtime's monitor woken by that system
// call: with a 2 ms delay, writes a few milliseconds apart (as federation
// brings) paid that once per request, and it more than doubled the broker's
// context switches per request.
const (
	auditFlushDelay = 20 * time.Millisecond
	auditBatch      = 256
)

// OpenAudit opens (appending, mode 0600) the audit log at path.
func OpenAudit(path string, log *slog.Logger) (*Audit, error) {
	return OpenRotatingAudit(path, 0, 0, log)
}

// OpenRotatingAudit opens the audit log at path, rotating it when it would
// pass maxSize bytes (0: never) and keeping keep rotated files.
func OpenRotatingAudit(path string, maxSize int64, keep int, log *slog.Logger) (*Audit, error) {
	f, err := openAuditFile(path, maxSize, keep)
	if err != nil {
		return nil, fmt.Errorf("broker: audit log: %w", err)
	}
	return newAudit(f, log), nil
}

// Reopen makes the next write reopen the log's path, after logrotate moved
// the file. It is safe for concurrent use.
func (a *Audit) Reopen() {
	if f, ok := a.w.(*auditFile); ok {
		f.Reopen()
	}
	a.mu.Lock()
	a.wakeLocked()
	a.mu.Unlock()
}

// Failing reports whether the last write to the log failed.
func (a *Audit) Failing() bool { return a != nil && a.failing.Load() }

func newAudit(w io.WriteCloser, log *slog.Logger) *Audit {
	a := &Audit{w: w, log: log, kick: make(chan struct{}, 1), done: make(chan struct{}), timer: time.NewTimer(time.Hour)}
	a.timer.Stop()
	a.room = sync.NewCond(&a.mu)
	go a.run()
	return a
}

// Log queues r, stamping its time. It blocks when the queue is full rather
// than lose a record.
func (a *Audit) Log(r Record) {
	if a == nil {
		return
	}
	r.Time = "" // the writer stamps at
	at := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.q) >= auditQueueLength && !a.closed {
		a.wakeLocked()
		a.room.Wait()
	}
	if a.closed {
		return
	}
	a.q = append(a.q, queued{r, at})
	switch len(a.q) {
	case 1:
		a.timer.Reset(auditFlushDelay)
	case auditBatch:
		a.wakeLocked()
	}
}

// wakeLocked wakes the writer now.
func (a *Audit) wakeLocked() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
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
	var batch []queued
	for {
		select {
		case <-a.kick:
		case <-a.timer.C:
		}
		a.mu.Lock()
		batch, a.q = a.q, batch[:0]
		closed := a.closed
		a.timer.Stop() // woken by kick: the timer's wake-up is not needed
		a.room.Broadcast()
		a.mu.Unlock()
		buf = buf[:0]
		n := 0
		for _, e := range batch {
			buf, n = appendRecord(buf, e.r, e.at), n+1
			if len(buf) >= 1<<20 {
				a.write(buf, n)
				buf, n = buf[:0], 0
			}
		}
		a.write(buf, n)
		clear(batch)
		if closed {
			return
		}
	}
}

// auditRetry is how often a failing log is tried again while no record
// arrives, to write the audit_lost summary once there is space.
const auditRetry = time.Second

func (a *Audit) write(buf []byte, n int) {
	if len(buf) == 0 && a.lost == 0 {
		return
	}
	if len(buf) > 0 {
		if _, err := a.w.Write(buf); err != nil {
			a.failed(err, n)
			return
		}
	}
	if a.lost > 0 {
		line := appendRecord(nil, Record{Event: EventAuditLost, Count: a.lost,
			Reason: "records could not be written"}, time.Now())
		if _, err := a.w.Write(line); err != nil {
			a.failed(err, 0)
			return
		}
		a.log.Warn("audit log writable again", "lost_records", a.lost)
		a.lost = 0
	}
	a.failing.Store(false)
}

// failed counts n records lost and schedules a retry.
func (a *Audit) failed(err error, n int) {
	if n > 0 {
		// Log before counting: whoever sees the count also finds the log line.
		a.log.Error("audit log write failed: records lost", "records", n, "err", err)
	}
	a.errs.Add(uint64(n))
	a.lost += uint64(n)
	a.failing.Store(true)
	a.mu.Lock()
	if !a.closed {
		a.timer.Reset(auditRetry)
	}
	a.mu.Unlock()
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
		a.wakeLocked()
		a.room.Broadcast()
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

// ReadAudit decodes the records of an audit log, one JSON object a line. A
// last line without its newline is a record still being appended (or one a
// full disk cut short, which the writer truncates away): it is left for a
// later read, not reported as an error.
func ReadAudit(r io.Reader, fn func(Record) error) error {
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("broker: audit log: %w", err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil {
			return fmt.Errorf("broker: audit log, line %d: %w", n, err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}
