package bench

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// receiver reads the sockets of many subscribers from one goroutine, through
// one epoll instance, the way redis-benchmark reads all its clients from one
// event loop. With a goroutine per subscriber, a fan-out to a thousand costs
// the load generator a thousand goroutine wakes, about twice the CPU the
// server spends sending, and the last notice's arrival then measures the
// generator; one loop costs a read per ready socket.
type receiver struct {
	ep    int
	subs  []*recvSub // by the index in the epoll event's data
	buf   []byte
	evs   []unix.EpollEvent
	stop  atomic.Bool
	count func(n int) // notices completed by one pass
}

type recvSub struct {
	s    Subscriber
	fd   int
	rest []byte // the start of a notice still arriving
}

// receiveTimeout is how long one epoll_wait waits, so that stop is seen.
const receiveTimeout = 20 // ms

// newReceiver watches the sockets of subs for input. They must stay open
// until run returns.
func newReceiver(subs []Subscriber, count func(n int)) (*receiver, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", os.NewSyscallError("epoll_create1", err))
	}
	r := &receiver{ep: ep, buf: make([]byte, 64<<10), evs: make([]unix.EpollEvent, 256), count: count}
	for i, s := range subs {
		rc, err := s.SyscallConn()
		if err != nil {
			r.close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		fd := -1
		if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
			r.close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(i)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			r.close()
			return nil, fmt.Errorf("bench: %w", os.NewSyscallError("epoll_ctl", err))
		}
		r.subs = append(r.subs, &recvSub{s: s, fd: fd})
	}
	return r, nil
}

func (r *receiver) close() { unix.Close(r.ep) }

// run reads until stop is set or a socket fails, and then returns that
// error (nil after stop). It closes the epoll instance.
func (r *receiver) run() error {
	defer r.close()
	for !r.stop.Load() {
		n, err := unix.EpollWait(r.ep, r.evs, receiveTimeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("bench: %w", os.NewSyscallError("epoll_wait", err))
		}
		got := 0
		for _, ev := range r.evs[:n] {
			k, err := r.read(r.subs[ev.Fd])
			if err != nil {
				return err
			}
			got += k
		}
		if got > 0 {
			r.count(got)
		}
	}
	return nil
}

// read reads what s's socket holds and parses the whole notices in it.
func (r *receiver) read(s *recvSub) (int, error) {
	got := 0
	for {
		n, err := unix.Read(s.fd, r.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return got, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return got, fmt.Errorf("bench: subscriber: %w", os.NewSyscallError("read", err))
		case n == 0:
			return got, errors.New("bench: subscriber: the server closed the connection")
		}
		b := r.buf[:n]
		if len(s.rest) > 0 {
			s.rest = append(s.rest, b...)
			b = s.rest
		}
		used, k, err := s.s.Parse(b)
		if err != nil {
			return got, err
		}
		got += k
		s.rest = append(s.rest[:0], b[used:]...)
		if n < len(r.buf) {
			return got, nil
		}
	}
}
