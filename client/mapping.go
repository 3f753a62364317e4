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

	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
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
// replaced mapping is never unmapped under a Read: the new file is mapped
// over the same addresses, a Read that was inside the old one
// reads again, and a Wait inside it returns at once.
type Mapping struct {
	svc    *Service
	cur    atomic.Pointer[shm.Mapping] // nil on the socket fallback
	closed atomic.Bool

	mu    sync.Mutex // guards what follows, and replacing cur
	space shm.Space
	info  FileInfo
	id    fileID
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
	for {
		sm := m.cur.Load()
		if sm == nil {
			return 0
		}
		if seq := sm.ChangeSeq(); !sm.Replaced() {
			return seq
		}
	}
}

// Wait blocks until the change sequence differs from seq (from ChangeSeq,
// read before the values the caller has) and returns the new sequence. The
// broker wakes waiters through a futex in the shared file, so a watcher on
// the same host learns of a change without a message from the broker; it
// then reads what it needs. When a reconnect maps another file, Wait returns
// at once with that file's sequence: the values may all have changed; so it
// does when the broker replaced the file (Client.ReplaceServiceFile). Wait
// fails with ErrNotLocal on the socket fallback, and with ctx's error when
// ctx ends first.
func (m *Mapping) Wait(ctx context.Context, seq uint32) (uint32, error) {
	sm := m.cur.Load()
	if sm == nil {
		if m.closed.Load() {
			return seq, ErrClosed
		}
		return seq, ErrNotLocal
	}
	got, err := sm.Wait(ctx, seq)
	if err == nil && sm.Replaced() {
		err = shm.ErrInterrupted // got may be another file's
	}
	switch {
	case errors.Is(err, shm.ErrInterrupted), errors.Is(err, shm.ErrServiceReplaced) && m.follow(ctx, sm):
		if m.cur.Load() != nil {
			return m.ChangeSeq(), nil
		}
		if m.closed.Load() {
			return seq, ErrClosed
		}
		return seq, ErrNotLocal
	case errors.Is(err, shm.ErrClosed):
		return seq, ErrClosed
	case errors.Is(err, shm.ErrServiceReplaced) && m.cur.Load() == nil:
		return seq, ErrNotLocal // refused the new file: reads go to the socket
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
		m.space.Close()
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
	sm, err := m.space.Map(file)
	if err != nil {
		file.Close()
		return fmt.Errorf("client: map %s: %w", m.svc.ID, err)
	}
	m.cur.Store(sm)
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
	for {
		sm := m.cur.Load() // acquire: a mapping stored is fully built
		if sm == nil {
			return m.readSocket(ctx, name, dst)
		}
		b, v, err := sm.Read(name, dst)
		if err == nil {
			return b, v, nil
		}
		if errors.Is(err, shm.ErrServiceReplaced) && m.follow(ctx, sm) {
			continue // the broker moved the service: read the new file (or the socket)
		}
		if !errors.Is(err, shm.ErrReplaced) {
			return b, v, shmErr(err, name)
		}
	}
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
	sm := m.cur.Load()
	for sm != nil {
		vs := sm.Variables()
		if !sm.Replaced() {
			return variableInfos(vs), nil
		}
		sm = m.cur.Load()
	}
	if m.closed.Load() {
		return nil, ErrClosed
	}
	return m.svc.Variables(ctx)
}

func variableInfos(vs []shm.VarInfo) []VariableInfo {
	out := make([]VariableInfo, len(vs))
	for i, v := range vs {
		out[i] = VariableInfo{Name: v.Name, Size: v.Size, Capacity: v.Capacity, Version: v.Version}
	}
	return out
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
		r, err = as[*ipc.ServiceFilePath](msg)
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
	m.cur.Store(nil)
	m.space.Clear() // fails only if mmap does; the file then stays mapped until Close
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
	m.cur.Store(nil)
	return m.space.Close()
}
