package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/commy/commy/ipc"
	"github.com/commy/commy/shm"
)

// Mapping reads a service's values. Where the broker grants the map right it
// reads a read-only mapping of the service file: no system call, no lock and
// no allocation once dst is large enough. Without that right it falls back to
// ReadVariable over the socket, transparently; Local says which. A Mapping is
// safe for concurrent use; Close must not race with Read.
//
// The file only grows, up to a maximum size the mapping reserves from the
// start, and values that move are found again under their seqlock, so growth
// and relocation need no remapping. After a reconnect (WithReconnect) a local
// Mapping stats file_path: if it still names the file it maps (the file
// backend, where the file outlives the broker) it keeps its mapping and asks
// nothing. Otherwise (a memfd, whose path is under /proc, or a file that was
// replaced) it asks the broker for the file again and remaps if it is a
// different file; if the broker refuses, reads fall back to the socket. A
// replaced mapping is unmapped as soon as the last Read or Wait inside it
// returns; a Wait inside it returns at once.
type Mapping struct {
	svc    *Service
	cur    atomic.Pointer[mapRef] // nil on the socket fallback
	closed atomic.Bool

	mu   sync.Mutex // guards what follows, and replacing cur
	info FileInfo
	id   fileID
}

// mapRef is one shm.Mapping and the calls inside it. Once replaced (retired)
// it is closed by whoever leaves it last: the replacer or the last call.
//
// A caller enters with users.Add(1) and then checks that the ref is still
// current; the replacer swaps cur, sets retired and then leaves as a user
// itself. Go's atomics are sequentially consistent, so either the caller sees
// the swap (and leaves without touching the memory) or its release sees
// retired (and the last one out closes).
type mapRef struct {
	sm      *shm.Mapping
	users   atomic.Int64
	retired atomic.Bool
	closed  atomic.Bool
}

// release leaves r, closing it if it was retired and this was the last call.
func (r *mapRef) release() {
	if r.users.Add(-1) == 0 && r.retired.Load() {
		r.close()
	}
}

// retire marks r replaced, ends Waits inside it and closes it if it is idle.
func (r *mapRef) retire() {
	r.users.Add(1) // Interrupt is inside r too
	r.retired.Store(true)
	r.sm.Interrupt()
	r.release()
}

func (r *mapRef) close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return nil
	}
	return r.sm.Close()
}

// acquire enters the current mapping, or returns nil on the socket fallback.
// The caller releases it.
func (m *Mapping) acquire() *mapRef {
	for {
		r := m.cur.Load() // acquire: a mapping swapped in is fully built
		if r == nil {
			return nil
		}
		r.users.Add(1)
		if m.cur.Load() == r {
			return r
		}
		r.release()
	}
}

// fileID identifies a file across paths and descriptors.
type fileID struct{ dev, ino uint64 }

func idOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, true
}

// ErrNotLocal: the Mapping reads over the socket, so there is no shared
// memory to wait on; use Service.Subscribe.
var ErrNotLocal = errors.New("client: mapping is not local")

// ChangeSeq is the service file's change sequence, which the broker bumps
// after every change it applies. It wraps. Without a local mapping it is 0.
func (m *Mapping) ChangeSeq() uint32 {
	if r := m.acquire(); r != nil {
		defer r.release()
		return r.sm.ChangeSeq()
	}
	return 0
}

// Wait blocks until the change sequence differs from seq (from ChangeSeq,
// read before the values the caller has) and returns the new sequence. The
// broker wakes waiters through a futex in the shared file, so a watcher on
// the same host learns of a change without a message from the broker; it
// then reads what it needs. When a reconnect maps another file, Wait returns
// at once with that file's sequence: the values may all have changed. Wait
// fails with ErrNotLocal on the socket fallback, and with ctx's error when
// ctx ends first.
func (m *Mapping) Wait(ctx context.Context, seq uint32) (uint32, error) {
	r := m.acquire()
	if r == nil {
		if m.closed.Load() {
			return seq, ErrClosed
		}
		return seq, ErrNotLocal
	}
	got, err := r.sm.Wait(ctx, seq)
	r.release()
	switch {
	case errors.Is(err, shm.ErrInterrupted):
		if r := m.acquire(); r != nil {
			defer r.release()
			return r.sm.ChangeSeq(), nil
		}
		if m.closed.Load() {
			return seq, ErrClosed
		}
		return seq, ErrNotLocal
	case errors.Is(err, shm.ErrClosed):
		return seq, ErrClosed
	case errors.Is(err, shm.ErrServiceDeleted):
		return seq, shmErr(err, m.svc.ID)
	}
	return got, err
}

// Map maps the service file through the descriptor the broker passes, or
// falls back to the socket when the client may read but not map
// (ErrHybridAccessDenied).
func (s *Service) Map(ctx context.Context) (*Mapping, error) {
	fi, file, err := s.OpenFile(ctx)
	if errors.Is(err, ErrHybridAccessDenied) {
		return &Mapping{svc: s}, nil
	}
	if err != nil {
		return nil, err
	}
	m := &Mapping{svc: s}
	if err := m.installLocked(fi, file); err != nil {
		return nil, err
	}
	c := s.c
	c.mu.Lock()
	c.maps[m] = struct{}{}
	c.mu.Unlock()
	return m, nil
}

// installLocked maps file (taking it) as the current mapping. The caller holds
// m.mu or has m to itself.
func (m *Mapping) installLocked(fi FileInfo, file *os.File) error {
	st, err := file.Stat()
	if err != nil {
		file.Close()
		return fmt.Errorf("client: map %s: %w", m.svc.ID, err)
	}
	id, _ := idOf(st)
	sm, err := shm.Map(file)
	if err != nil {
		file.Close()
		return fmt.Errorf("client: map %s: %w", m.svc.ID, err)
	}
	if old := m.cur.Swap(&mapRef{sm: sm}); old != nil {
		old.retire()
	}
	m.info, m.id = fi, id
	return nil
}

// Local reports whether reads come from shared memory (true) or the socket.
func (m *Mapping) Local() bool { return m.cur.Load() != nil }

// File is what the broker said of the file; empty on the socket fallback.
func (m *Mapping) File() FileInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.info
}

// Read copies the named value into dst (grown if too small) and returns it
// with its version. A missing variable is an error matching
// ErrVariableNotFound; a value that kept changing during the read (or that a
// killed broker left mid-change, until it restarts) matches ErrBusy, a
// damaged file ErrCorrupt, a deleted service ErrServiceDeleted (and
// ErrServiceNotFound).
func (m *Mapping) Read(name string, dst []byte) ([]byte, uint64, error) {
	return m.read(context.Background(), name, dst)
}

// read is Read with a context for the socket fallback.
func (m *Mapping) read(ctx context.Context, name string, dst []byte) ([]byte, uint64, error) {
	if r := m.acquire(); r != nil {
		b, v, err := r.sm.Read(name, dst)
		r.release()
		if err != nil {
			err = shmErr(err, name)
		}
		return b, v, err
	}
	return m.readSocket(ctx, name, dst)
}

func (m *Mapping) readSocket(ctx context.Context, name string, dst []byte) ([]byte, uint64, error) {
	if m.closed.Load() {
		return dst, 0, ErrClosed
	}
	b, v, err := m.svc.Read(ctx, name)
	if err != nil {
		return dst, 0, err
	}
	return append(dst[:0], b...), v, nil
}

func shmErr(err error, name string) error {
	switch {
	case errors.Is(err, shm.ErrNotFound):
		return fmt.Errorf("%w: %s", ErrVariableNotFound, name)
	case errors.Is(err, shm.ErrClosed):
		return ErrClosed
	case errors.Is(err, shm.ErrBusy):
		return fmt.Errorf("%w: %s: %w", ErrBusy, name, err)
	case errors.Is(err, shm.ErrCorrupt):
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	case errors.Is(err, shm.ErrServiceDeleted):
		return fmt.Errorf("%w (%w): %s: %w", ErrServiceDeleted, ErrServiceNotFound, name, err)
	}
	return fmt.Errorf("client: read %s: %w", name, err)
}

// Variables lists the variables, read from the mapping when local.
func (m *Mapping) Variables(ctx context.Context) ([]VariableInfo, error) {
	r := m.acquire()
	if r == nil {
		if m.closed.Load() {
			return nil, ErrClosed
		}
		return m.svc.Variables(ctx)
	}
	vs := r.sm.Variables()
	r.release()
	out := make([]VariableInfo, len(vs))
	for i, v := range vs {
		out[i] = VariableInfo{Name: v.Name, Size: v.Size, Capacity: v.Capacity, Version: v.Version}
	}
	return out, nil
}

// recheck makes sure a local mapping still maps the broker's file after a
// reconnect (see Mapping). It fails only when the connection does.
func (m *Mapping) recheck(ctx context.Context, l *link) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed.Load() || m.cur.Load() == nil {
		return nil
	}
	if p := m.info.Path; p != "" && !strings.HasPrefix(p, "/proc/") {
		if fi, err := os.Stat(p); err == nil {
			if id, ok := idOf(fi); ok && id == m.id {
				return nil
			}
		}
	}
	s := m.svc
	msg, file, err := s.c.doOn(ctx, l, &ipc.GetServiceFilePath{TenantID: s.Tenant, ServiceName: s.Name})
	var r *ipc.ServiceFilePath
	if err == nil {
		r, err = ipc.As[*ipc.ServiceFilePath](msg)
	}
	if err == nil && file == nil {
		file, err = os.Open(r.FilePath)
	}
	if err != nil {
		if file != nil {
			file.Close()
		}
		if !remote(err) && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
			return err
		}
		m.fallbackLocked()
		return nil
	}
	fi := FileInfo{Path: r.FilePath, Size: int64(r.FileSize)}
	if st, serr := file.Stat(); serr == nil {
		if id, ok := idOf(st); ok && id == m.id {
			file.Close()
			m.info = fi
			return nil
		}
	}
	if err := m.installLocked(fi, file); err != nil {
		m.fallbackLocked()
	}
	return nil
}

// fallbackLocked switches reads to the socket.
func (m *Mapping) fallbackLocked() {
	if old := m.cur.Swap(nil); old != nil {
		old.retire()
	}
	m.info, m.id = FileInfo{}, fileID{}
	c := m.svc.c
	c.mu.Lock()
	delete(c.maps, m)
	c.mu.Unlock()
}

// Close unmaps the file and closes its descriptor. It is safe to call more
// than once.
func (m *Mapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed.Swap(true) {
		return nil
	}
	c := m.svc.c
	c.mu.Lock()
	delete(c.maps, m)
	c.mu.Unlock()
	if r := m.cur.Swap(nil); r != nil {
		r.retired.Store(true)
		return r.close()
	}
	return nil
}
