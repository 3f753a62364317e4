package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// drive measures clients connections that open makes, all driven from the
// calling goroutine through one poller, the way redis-benchmark drives its
// clients from one event loop. Each client sends the batch that batch
// encodes (cfg.Pipeline requests) in one write, and when the last of its
// replies is in, its next, until cfg.Requests operations were issued or
// cfg.Duration passed. Each batch is one sample and counts cfg.Pipeline
// operations. First every client sends cfg.Warmup requests' worth of
// batches, unmeasured.
//
// A goroutine per client, each blocked in its read, cost the generator
// about 10 us of CPU per request on a 2-vCPU machine, in goroutine wakes
// and the runtime's poller, more than either server spends: sharing the
// machine, the generator set the rate. The loop costs about 7.5 us there,
// most of it the two socket calls.
func drive(ctx context.Context, cfg Config, desc string, clients int, open func() (Conn, error), batch func(Conn) ([]byte, error)) ([]time.Duration, int64, time.Duration, error) {
	d := &driver{batch: batch, per: cfg.Pipeline, total: int64(cfg.Requests)}
	defer func() {
		for _, c := range d.cs {
			c.c.Close()
		}
	}()
	ps := make([]parser, 0, clients)
	for range clients {
		c, err := open()
		if err != nil {
			return nil, 0, 0, err
		}
		d.cs = append(d.cs, driven{c: c, warmup: cfg.Warmup / d.per})
		ps = append(ps, c)
	}
	var err error
	if d.p, err = newPoller("client", ps); err != nil {
		return nil, 0, 0, err
	}
	defer d.p.close()
	if cfg.Duration == 0 {
		d.lat = make([]time.Duration, 0, d.total/int64(d.per))
	}
	cancel := context.AfterFunc(ctx, d.p.interrupt)
	defer cancel()

	for i := range d.cs {
		if err := d.next(i, time.Time{}); err != nil {
			return nil, 0, 0, err
		}
	}
	if err := d.run(ctx); err != nil {
		return nil, 0, 0, err
	}
	stopProgress := progress(cfg, desc, d.total, &d.done)
	t0 := time.Now()
	d.measuring = true
	if cfg.Duration > 0 {
		d.deadline = t0.Add(cfg.Duration)
	}
	for i := range d.cs {
		if err = d.next(i, time.Now()); err != nil {
			break
		}
	}
	if err == nil {
		err = d.run(ctx)
	}
	elapsed := time.Since(t0)
	stopProgress()
	if err != nil {
		return nil, 0, 0, err
	}
	return d.lat, d.done.Load(), elapsed, nil
}

// driver is the state of drive's loop.
type driver struct {
	p         *poller
	cs        []driven // by the poller's index
	batch     func(Conn) ([]byte, error)
	per       int // requests in a batch
	busy      int // clients with a batch in flight
	measuring bool
	issued    int64 // measured requests sent, or about to be
	total     int64
	deadline  time.Time
	lat       []time.Duration
	done      atomic.Int64 // measured requests answered, for progress
}

// driven is one client of a driver.
type driven struct {
	c      Conn
	out    []byte    // the part of the batch in flight the socket has not taken
	due    int       // replies the batch in flight waits for
	sent   time.Time // when the batch in flight was sent; zero if unmeasured
	warmup int       // unmeasured batches still to send
	// blocked: the socket took only part of the batch, and is watched for
	// room to write the rest.
	blocked bool
}

// run handles events until no client has a batch in flight, or ctx ends.
func (d *driver) run(ctx context.Context) error {
	for d.busy > 0 {
		evs, err := d.p.wait()
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := d.event(int(ev.Fd), ev.Events); err != nil {
				return err
			}
		}
	}
	return nil
}

// event handles what epoll reported for client i: room to write the rest
// of its batch, replies, or the end of the connection.
func (d *driver) event(i int, events uint32) error {
	c := &d.cs[i]
	if events&unix.EPOLLOUT != 0 && len(c.out) > 0 {
		if err := d.flush(i); err != nil {
			return err
		}
	}
	if events&^unix.EPOLLOUT == 0 {
		return nil
	}
	k, err := d.p.read(d.p.socks[i])
	if err != nil {
		return err
	}
	if k == 0 {
		return nil
	}
	if k > c.due {
		return fmt.Errorf("bench: client: %d replies where %d were due", k, c.due)
	}
	if c.due -= k; c.due > 0 {
		return nil
	}
	if len(c.out) > 0 {
		return fmt.Errorf("bench: client: every reply came before %d bytes of the batch were sent", len(c.out))
	}
	now := time.Now()
	d.busy--
	if !c.sent.IsZero() {
		d.lat = append(d.lat, now.Sub(c.sent))
		d.done.Add(int64(d.per))
	}
	return d.next(i, now)
}

// next sends client i's next batch, if it has one: a warmup batch, or,
// once measuring, a measured one while the budget lasts.
func (d *driver) next(i int, now time.Time) error {
	c := &d.cs[i]
	switch {
	case c.warmup > 0:
		c.warmup--
		return d.send(i, time.Time{})
	case !d.measuring:
		return nil // until every client is warm
	case d.deadline.IsZero():
		if d.issued += int64(d.per); d.issued > d.total {
			return nil
		}
	case now.After(d.deadline):
		return nil
	}
	return d.send(i, now)
}

// send encodes client i's next batch and writes what the socket takes of
// it; sent is its time, zero for a batch not measured.
func (d *driver) send(i int, sent time.Time) error {
	c := &d.cs[i]
	b, err := d.batch(c.c)
	if err != nil {
		return err
	}
	c.due, c.sent = d.per, sent
	d.busy++
	c.out = b // valid until the next batch, after every reply
	return d.flush(i)
}

// flush writes what the socket takes of client i's batch, and watches the
// socket for room while some is left.
func (d *driver) flush(i int) error {
	c := &d.cs[i]
	rest, err := d.p.write(d.p.socks[i], c.out)
	if err != nil {
		return err
	}
	c.out = rest
	if blocked := len(rest) > 0; blocked != c.blocked {
		events := uint32(watchIn)
		if blocked {
			events |= unix.EPOLLOUT
		}
		if err := d.p.watch(i, events); err != nil {
			return err
		}
		c.blocked = blocked
	}
	return nil
}
