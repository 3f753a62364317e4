package broker_test

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/testutil"
	"golang.org/x/sys/unix"
)

// readAudit returns the records of the audit log at path and its rotated
// files, oldest first.
func readAudit(t *testing.T, path string) []broker.Record {
	t.Helper()
	var recs []broker.Record
	files, _ := filepath.Glob(path + ".*")
	for i := len(files); i >= 0; i-- {
		name := path
		if i > 0 {
			name = fmt.Sprintf("%s.%d", path, i)
		}
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		err = broker.ReadAudit(f, func(r broker.Record) error { recs = append(recs, r); return nil })
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	return recs
}

// TestAttackDenialFlood: a uid without rights sends thousands of denied
// requests; the audit log and the service log record the first in full and
// one summary with the count, and root's actions are still recorded.
func TestAttackDenialFlood(t *testing.T) {
	testutil.RequireRoot(t)
	const denials = 3000
	var logs syncBuffer
	h := start(t, broker.Config{AuditCoalesce: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	seedService(t, h, "acme", "orders")
	steps := make([]map[string]any, denials)
	for i := range steps {
		steps[i] = map[string]any{"type": "GetServiceFilePath", "tenant_id": "acme", "service_name": "orders"}
	}
	res := runScript(t, h, testutil.Nobody, testutil.Nobody, steps...)
	if res[denials-1].Reply != "PERMISSION_DENIED" {
		t.Fatalf("last reply %s", res[denials-1].Reply)
	}
	c := h.dial(t)
	if err := c.CreateTenant(t.Context(), "after"); err != nil {
		t.Fatal(err)
	}
	dataDir := h.dataDir
	h.stop(t) // ends the window: the summary is written on shutdown
	var full, summed uint64
	var rootAfter bool
	for _, r := range readAudit(t, filepath.Join(dataDir, "audit.log")) {
		switch {
		case r.Event == broker.EventDenied && *r.UID == testutil.Nobody:
			full++
		case r.Event == broker.EventSuppressed && *r.UID == testutil.Nobody:
			summed += r.Count
		case r.Event == broker.EventAdmin && r.Tenant == "after":
			rootAfter = true
		}
	}
	if full != broker.DefaultAuditBurst || full+summed != denials || !rootAfter {
		t.Fatalf("audit: %d denials in full, %d in summaries (want %d and %d); root's action recorded: %v",
			full, summed, broker.DefaultAuditBurst, denials-broker.DefaultAuditBurst, rootAfter)
	}
	if n := strings.Count(logs.String(), "msg=\"request denied\""); n != broker.DefaultAuditBurst {
		t.Fatalf("%d denial lines in the service log", n)
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("denials=%d", denials-broker.DefaultAuditBurst)) {
		t.Fatalf("no summary line in the service log:\n%s", logs.String())
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory, unmounted in
// cleanup.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir, err := os.MkdirTemp("", "commy-tmpfs")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		os.Remove(dir)
		if errors.Is(err, unix.EPERM) {
			t.Skipf("cannot mount a tmpfs here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	return dir
}

// fill takes the free space of the file system at dir; the returned
// function gives it back.
func fill(t *testing.T, dir string) func() {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	return func() { os.Remove(name) }
}

// TestAuditRotationOnSmallDisk: the audit log on a 512 KiB tmpfs rotates
// at its size limit, so a flood of audited writes never fills the disk.
func TestAuditRotationOnSmallDisk(t *testing.T) {
	dir := mountTmpfs(t, 512<<10)
	audit := filepath.Join(dir, "audit.log")
	h := start(t, broker.Config{AuditLog: audit, AuditMaxSize: 64 << 10, AuditKeep: 2})
	seedService(t, h, "acme", "orders")
	c := h.dial(t)
	svc, err := c.Service(t.Context(), "acme", "orders")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5000; i++ { // about 1 MB of records
		if _, err := svc.Write(t.Context(), "v", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	h.stop(t)
	var total int64
	for _, name := range []string{audit, audit + ".1", audit + ".2", audit + ".3"} {
		fi, err := os.Stat(name)
		if name == audit+".3" {
			if err == nil {
				t.Fatalf("%s kept past AuditKeep", name)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 64<<10 {
			t.Fatalf("%s is %d bytes, past the 64 KiB limit", name, fi.Size())
		}
		total += fi.Size()
	}
	if h.b.Stats().AuditErrors != 0 {
		t.Fatalf("%d audit records lost with room to spare", h.b.Stats().AuditErrors)
	}
	// The newest records are kept, the oldest rotated away.
	writes := 0
	for _, r := range readAudit(t, audit) {
		if r.Event == broker.EventWrite {
			writes++
		}
	}
	if writes == 0 || writes >= 5000 || total > 3*64<<10 {
		t.Fatalf("%d write records kept in %d bytes", writes, total)
	}
}

// TestAuditFullDisk: with the audit log's file system full, reads and
// permitted writes go on, lost records are counted, and a summary is
// written once there is space again. In strict mode audited requests are
// refused instead, and reads still served.
func TestAuditFullDisk(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprint("strict=", strict), func(t *testing.T) {
			dir := mountTmpfs(t, 256<<10)
			audit := filepath.Join(dir, "audit.log")
			h := start(t, broker.Config{AuditLog: audit, AuditStrict: strict})
			seedService(t, h, "acme", "orders")
			c := h.dial(t)
			ctx := t.Context()
			svc, err := c.Service(ctx, "acme", "orders")
			if err != nil {
				t.Fatal(err)
			}
			free := fill(t, dir)
			// Writes go on until their records no longer fit in the last
			// page of the log; the broker learns of the failure from a
			// record, so the writes before it are accepted in either mode.
			for i := 0; h.b.Stats().AuditErrors == 0; i++ {
				if i > 2000 {
					t.Fatal("the audit log never failed on a full disk")
				}
				if _, err := svc.Write(ctx, "v", []byte("filling")); err != nil && !(strict && errors.Is(err, client.ErrNoSpace)) {
					t.Fatal(err)
				}
				time.Sleep(time.Millisecond)
			}
			if strict {
				waitFor(t, "strict audit to refuse", func() bool {
					_, err := svc.Write(ctx, "v", []byte("probe"))
					return errors.Is(err, client.ErrNoSpace)
				})
			}
			for i := 0; i < 20; i++ {
				_, err := svc.Write(ctx, "v", []byte(fmt.Sprint(i)))
				if strict != errors.Is(err, client.ErrNoSpace) || (!strict && err != nil) {
					t.Fatalf("write %d with the disk full: %v", i, err)
				}
				if _, _, err := svc.Read(ctx, "v"); err != nil {
					t.Fatalf("read with the disk full: %v", err)
				}
			}
			lost := h.b.Stats().AuditErrors
			free()
			// Every lost record is counted by a summary. A batch small
			// enough for the space left can succeed between failures, and
			// with it a summary of the records lost until then, so there
			// may be more than one.
			waitFor(t, "the audit_lost summary", func() bool {
				var counted uint64
				for _, r := range readAudit(t, audit) {
					if r.Event == broker.EventAuditLost {
						counted += r.Count
					}
				}
				return counted >= lost
			})
			if _, err := svc.Write(ctx, "v", []byte("again")); err != nil {
				t.Fatalf("write once there is space: %v", err)
			}
			h.stop(t)
		})
	}
}

// TestAuditReopen: after the log is moved away, ReopenAudit makes the
// broker write to a new file at the path.
func TestAuditReopen(t *testing.T) {
	h := start(t, broker.Config{})
	audit := filepath.Join(h.dataDir, "audit.log")
	c := h.dial(t)
	if err := c.CreateTenant(t.Context(), "one"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first record", func() bool {
		for _, r := range readAudit(t, audit) {
			if r.Tenant == "one" {
				return true
			}
		}
		return false
	})
	if err := os.Rename(audit, audit+".old"); err != nil {
		t.Fatal(err)
	}
	h.b.ReopenAudit()
	if err := c.CreateTenant(t.Context(), "two"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new file", func() bool {
		for _, r := range readAudit(t, audit) {
			if r.Tenant == "two" {
				return true
			}
		}
		return false
	})
	for _, r := range readAudit(t, audit) {
		if r.Tenant == "one" {
			t.Fatal("the old record is in the new file")
		}
	}
}

// TestAttackProtocolErrorFlood: connections that break the protocol are
// logged in full only up to the burst; the rest are summed.
func TestAttackProtocolErrorFlood(t *testing.T) {
	const conns = 200
	var logs syncBuffer
	h := start(t, broker.Config{AuditCoalesce: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	a := startAttack(t, h, testutil.Nobody, "garbage", conns)
	if got := a.line(t); got != fmt.Sprint("sent ", conns) {
		t.Fatalf("child: %q", got)
	}
	served(t, h)
	h.stop(t)
	if n := strings.Count(logs.String(), "msg=\"connection closed on a protocol error\""); n != broker.DefaultAuditBurst {
		t.Fatalf("%d protocol-error lines in the service log", n)
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("denials=%d", conns-broker.DefaultAuditBurst)) {
		t.Fatalf("no summary line:\n%s", logs.String())
	}
}

// TestAttackReconnectFlood: a uid that reconnects in a loop has the connect
// and disconnect records of its first connections written in full and the
// rest counted in summaries, while root's connections are still recorded.
func TestAttackReconnectFlood(t *testing.T) {
	testutil.RequireRoot(t)
	const connects = 200
	h := start(t, broker.Config{AuditCoalesce: time.Hour})
	cmd := testutil.Child(t, "connect", testutil.Nobody, testutil.Nobody, "COMMY_SOCK="+h.sock,
		fmt.Sprintf("COMMY_CONNECTS=%d", connects))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("connect child: %v: %s", err, out)
	}
	const rootConnects = 3
	for range rootConnects {
		h.dial(t).Close()
	}
	dataDir := h.dataDir
	h.stop(t) // ends the window: the summary is written on shutdown
	count := map[string]uint64{}
	for _, r := range readAudit(t, filepath.Join(dataDir, "audit.log")) {
		who := "root"
		if *r.UID == testutil.Nobody {
			who = "nobody"
		}
		n := uint64(1)
		if r.Event == broker.EventSuppressed {
			n = r.Count
		}
		count[who+" "+r.Event] += n
	}
	want := map[string]uint64{
		"nobody connect": broker.DefaultAuditBurst, "nobody disconnect": broker.DefaultAuditBurst,
		"nobody suppressed": 2 * (connects - broker.DefaultAuditBurst),
		"root connect":      rootConnects, "root disconnect": rootConnects,
	}
	if !maps.Equal(count, want) {
		t.Fatalf("audit records %v, want %v", count, want)
	}
}

// TestReadAuditPartialLine: a last line without its newline is a record
// being appended, read later; a damaged line before it is an error.
func TestReadAuditPartialLine(t *testing.T) {
	read := func(log string) ([]string, error) {
		var events []string
		err := broker.ReadAudit(strings.NewReader(log), func(r broker.Record) error {
			events = append(events, r.Event)
			return nil
		})
		return events, err
	}
	events, err := read("{\"event\":\"connect\"}\n{\"event\":\"write_variable\"}\n{\"event\":\"disc")
	if err != nil || len(events) != 2 || events[1] != "write_variable" {
		t.Fatalf("with a record being appended: %q, %v", events, err)
	}
	if _, err := read("{\"event\":\"conn\n{\"event\":\"write_variable\"}\n"); err == nil {
		t.Fatal("a damaged line before the last was not reported")
	}
}
