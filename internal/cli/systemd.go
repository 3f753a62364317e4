package cli

// This file is `commy serve`'s side of systemd: the listening sockets a
// socket unit passes (sd_listen_fds(3)) and the state changes the service
// manager is told about (sd_notify(3)). Outside systemd none of it acts.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commy/commy/broker"
	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// listenFDsStart corresponds to SD_LISTEN_FDS_START: the first passed fd.
const listenFDsStart = 3

// errActivation prefixes every socket-activation failure.
var errActivation = errors.New("socket activation")

// listenEnv is what LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES say.
type listenEnv struct {
	n     int      // descriptors passed, from listenFDsStart on; 0 when none
	names []string // one per descriptor; "" when unnamed
}

// parseListenEnv reads the socket-activation variables for the process pid.
// Without any of them it returns n == 0 and no error; variables that are
// malformed, or meant for another process, are an error that says which.
// Unlike sd_listen_fds(3), it does not ignore a LISTEN_PID of another
// process: a broker that silently made its own socket beside the one the
// socket unit holds would never be reached.
func parseListenEnv(getenv func(string) string, pid int) (listenEnv, error) {
	pidVar, fdsVar, namesVar := getenv("LISTEN_PID"), getenv("LISTEN_FDS"), getenv("LISTEN_FDNAMES")
	switch {
	case pidVar == "" && fdsVar == "" && namesVar == "":
		return listenEnv{}, nil
	case pidVar == "":
		return listenEnv{}, fmt.Errorf("%w: LISTEN_FDS or LISTEN_FDNAMES is set but LISTEN_PID is not", errActivation)
	case fdsVar == "":
		return listenEnv{}, fmt.Errorf("%w: LISTEN_PID is set but LISTEN_FDS is not", errActivation)
	}
	p, err := strconv.Atoi(pidVar)
	if err != nil || p <= 0 {
		return listenEnv{}, fmt.Errorf("%w: LISTEN_PID=%q is not a process id", errActivation, pidVar)
	}
	if p != pid {
		return listenEnv{}, fmt.Errorf("%w: LISTEN_PID=%d is not this process (pid %d): the sockets were passed to another process; "+
			"unset LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES to create a socket instead", errActivation, p, pid)
	}
	n, err := strconv.Atoi(fdsVar)
	if err != nil {
		return listenEnv{}, fmt.Errorf("%w: LISTEN_FDS=%q is not a number", errActivation, fdsVar)
	}
	if n <= 0 {
		return listenEnv{}, fmt.Errorf("%w: LISTEN_FDS=%d: no sockets were passed", errActivation, n)
	}
	names := make([]string, n)
	if namesVar != "" {
		got := strings.Split(namesVar, ":")
		if len(got) != n {
			return listenEnv{}, fmt.Errorf("%w: LISTEN_FDNAMES has %d names for LISTEN_FDS=%d", errActivation, len(got), n)
		}
		copy(names, got)
	}
	return listenEnv{n: n, names: names}, nil
}

// systemdFDs returns what systemd passed to this process: the listening
// sockets of a socket unit, and the descriptors a previous broker put in the
// file descriptor store (their names satisfy broker.IsStoredName). It returns
// none when nothing was passed. Each socket must be a listening AF_UNIX
// SOCK_STREAM socket; the listeners never remove their socket file on Close,
// because the socket unit owns it.
func systemdFDs() ([]*net.UnixListener, []broker.StoredFD, error) {
	env, err := parseListenEnv(os.Getenv, os.Getpid())
	if err != nil || env.n == 0 {
		return nil, nil, err
	}
	// Check every descriptor before go-systemd wraps them in os.Files, so that
	// an error never closes a descriptor this process did not inherit.
	for i, name := range env.names {
		if broker.IsStoredName(name) {
			continue // the broker checks these as it restores them
		}
		if err := checkListenFD(listenFDsStart+i, name); err != nil {
			return nil, nil, err
		}
	}
	// Files sets close-on-exec and unsets the variables; it returns nil only
	// for an environment parseListenEnv already refused.
	files := activation.Files(true)
	if len(files) != env.n {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, fmt.Errorf("%w: %d descriptors from LISTEN_FDS=%d", errActivation, len(files), env.n)
	}
	var (
		ls     []*net.UnixListener
		stored []broker.StoredFD
		errs   []error
	)
	for i, f := range files {
		if broker.IsStoredName(env.names[i]) {
			stored = append(stored, broker.StoredFD{Name: env.names[i], File: f})
			continue
		}
		l, err := net.FileListener(f) // a dup; f is closed below
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: fd %q: %w", errActivation, f.Name(), err))
			continue
		}
		ul, ok := l.(*net.UnixListener)
		if !ok { // checkListenFD makes this unreachable
			l.Close()
			errs = append(errs, fmt.Errorf("%w: fd %q is not a Unix listener", errActivation, f.Name()))
			continue
		}
		ul.SetUnlinkOnClose(false)
		ls = append(ls, ul)
	}
	if err := errors.Join(errs...); err != nil {
		closeListeners(ls)
		closeStored(stored)
		return nil, nil, err
	}
	return ls, stored, nil
}

func closeStored(fds []broker.StoredFD) {
	for _, fd := range fds {
		fd.File.Close()
	}
}

// socketPath is the file a Unix listener is bound to, or "" for an unnamed
// or abstract socket.
func socketPath(l net.Listener) string {
	if a, ok := l.Addr().(*net.UnixAddr); ok && !strings.HasPrefix(a.Name, "@") {
		return a.Name
	}
	return ""
}

// statusInterval is how often STATUS= is sent.
const statusInterval = 10 * time.Second

// notifier tells the service manager named by NOTIFY_SOCKET about state
// changes (sd_notify(3)). Without NOTIFY_SOCKET it does nothing. It is safe
// for concurrent use.
type notifier struct {
	log    *slog.Logger
	failed atomic.Bool // a failure was logged at warning level
}

// enabled reports whether a service manager listens.
func (n *notifier) enabled() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// notify sends newline-separated assignments such as "READY=1\nSTATUS=...".
// The first failure is a warning, later ones are debug lines.
func (n *notifier) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		level := slog.LevelDebug
		if !n.failed.Swap(true) {
			level = slog.LevelWarn
		}
		n.log.Log(context.Background(), level, "sd_notify failed", "err", err)
	}
}

// status is a STATUS= assignment with the broker's counts, after note when
// note is not empty.
func status(b *broker.Broker, note string) string {
	st := b.Stats()
	s := fmt.Sprintf("serving %d connections, %d tenants, %d services", st.Connections, st.Tenants, st.Services)
	if note != "" {
		s = note + "; " + s
	}
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ")
}

// run sends STATUS= every statusInterval and, when watchdog is not zero,
// WATCHDOG=1 every watchdog/2, until ctx is done. A watchdog ping first reads
// the broker's Stats, so a broker wedged on its state lock stops pinging and
// systemd restarts it.
func (n *notifier) run(ctx context.Context, b *broker.Broker, watchdog time.Duration) {
	st := time.NewTicker(statusInterval)
	defer st.Stop()
	var ping <-chan time.Time
	if watchdog > 0 {
		wt := time.NewTicker(watchdog / 2)
		defer wt.Stop()
		ping = wt.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.C:
			n.notify(status(b, ""))
		case <-ping:
			b.Stats()
			n.notify(daemon.SdNotifyWatchdog)
		}
	}
}

// watchdogInterval is WATCHDOG_USEC when it is meant for this process, 0
// when the unit has no watchdog.
func watchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("systemd watchdog: %w", err)
	}
	return d, nil
}

// fdStore is systemd's file descriptor store (FDSTORE=1 in sd_notify(3)),
// reached through NOTIFY_SOCKET. Systemd keeps what is stored while the
// service restarts, and passes it back through LISTEN_FDS. The unit must
// allow it with FileDescriptorStoreMax=; systemd drops the descriptors
// beyond that number, and logs it. It is safe for concurrent use.
type fdStore struct {
	log  *slog.Logger
	max  int // $FDSTORE (systemd 254 and later), or 0 when not told
	mu   sync.Mutex
	conn *net.UnixConn
	kept map[string]bool // names stored
	over bool            // the warning about max was given
}

// fdStoreTimeout bounds how long a request waits for systemd to take a
// message off a full NOTIFY_SOCKET.
const fdStoreTimeout = time.Second

// newFDStore connects to NOTIFY_SOCKET.
func newFDStore(log *slog.Logger) (*fdStore, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil, errors.New("fd store: NOTIFY_SOCKET is not set")
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("fd store: %w", err)
	}
	max, _ := strconv.Atoi(os.Getenv("FDSTORE"))
	return &fdStore{log: log, max: max, conn: conn, kept: map[string]bool{}}, nil
}

// Store implements broker.FDStore.
func (s *fdStore) Store(name string, f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fd store: %w", err)
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = s.send("FDSTORE=1\nFDPOLL=0\nFDNAME="+name, unix.UnixRights(int(fd)))
	})
	if err = errors.Join(err, serr); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept[name] = true
	if s.max > 0 && len(s.kept) > s.max && !s.over {
		s.over = true
		s.log.Warn("fd store: more tenants and services than FileDescriptorStoreMax=; systemd drops the rest, "+
			"which then do not survive a restart", "max", s.max)
	}
	return nil
}

// Remove implements broker.FDStore.
func (s *fdStore) Remove(name string) error {
	if err := s.send("FDSTOREREMOVE=1\nFDNAME="+name, nil); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.kept, name)
	s.mu.Unlock()
	return nil
}

func (s *fdStore) send(state string, oob []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return errors.New("fd store: closed")
	}
	// WriteMsgUnix refuses a connected datagram socket: send on the raw one,
	// which still waits in the poller, bounded by the deadline.
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("fd store: %w", err)
	}
	s.conn.SetWriteDeadline(time.Now().Add(fdStoreTimeout))
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), []byte(state), oob, nil, 0)
		return serr != unix.EAGAIN
	})
	if err != nil { // the deadline passed, or the socket was closed
		return fmt.Errorf("fd store: sd_notify: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("fd store: sd_notify: %w", os.NewSyscallError("sendmsg", serr))
	}
	return nil
}

// Close closes the connection to NOTIFY_SOCKET; what was stored stays with
// systemd. It is safe to call more than once.
func (s *fdStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
