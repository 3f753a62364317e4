package bench

import (
	"errors"
	"os"
	"sync/atomic"
)

// receiver reads the sockets of many subscribers from one goroutine, through
// a poller. With a goroutine per subscriber, a fan-out to a thousand costs
// the load generator a thousand goroutine wakes, about twice the CPU the
// server spends sending, and the last notice's arrival then measures the
// generator; one loop costs a read per ready socket.
type receiver struct {
	p       *poller
	stopped atomic.Bool
	count   func(n int) // notices completed by one pass
}

// newReceiver watches the sockets of subs for input. They must stay open
// until run returns.
func newReceiver(subs []Subscriber, count func(n int)) (*receiver, error) {
	ps := make([]parser, len(subs))
	for i, s := range subs {
		ps[i] = s
	}
	p, err := newPoller("subscriber", ps)
	if err != nil {
		return nil, err
	}
	return &receiver{p: p, count: count}, nil
}

// run reads until stop is called or a socket fails, and then returns that
// error (nil after stop). It closes the epoll instance.
func (r *receiver) run() error {
	defer r.p.close()
	for {
		evs, err := r.p.wait()
		if errors.Is(err, os.ErrDeadlineExceeded) && r.stopped.Load() {
			return nil
		}
		if err != nil {
			return err
		}
		got := 0
		for _, ev := range evs {
			k, err := r.p.read(r.p.socks[ev.Fd])
			if err != nil {
				return err
			}
			got += k
		}
		if got > 0 {
			r.count(got)
		}
	}
}

// stop makes run return. It may be called from any goroutine.
func (r *receiver) stop() {
	r.stopped.Store(true) // before the interrupt, which run then sees
	r.p.interrupt()
}
