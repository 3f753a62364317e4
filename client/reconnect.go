package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Backoff paces reconnection attempts: the first waits Initial, each next
// one twice as long up to Max, and every wait varies at random by up to
// ±Jitter of itself so that many clients of a restarted broker spread out.
// Zero fields get the defaults.
type Backoff struct {
	Initial time.Duration // default 50ms
	Max     time.Duration // default 5s
	Jitter  float64       // in [0, 1], default 0.2
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 50 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Second
	}
	b.Max = max(b.Max, b.Initial)
	if b.Jitter <= 0 {
		b.Jitter = 0.2
	}
	b.Jitter = min(b.Jitter, 1)
	return b
}

// wait is the n-th wait (from 0), jittered.
func (b Backoff) wait(n int) time.Duration {
	d := b.Initial
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return time.Duration(float64(d) * (1 + b.Jitter*(2*rand.Float64()-1)))
}

// WithReconnect makes the client redial when the connection is lost, until
// Close, waiting as b says between attempts. On each new connection it says
// Hello again, renews every open Subscription (the same values keep working)
// and checks every local Mapping (see Mapping). Requests made while the
// client is away fail at once with ErrDisconnected, as do those that were
// waiting for a reply when the connection went.
func WithReconnect(b Backoff) Option { return func(o *options) { o.reconnect = &b } }

// reconnect dials until it has a restored connection, or Close.
func (c *Client) reconnect() *link {
	b := *c.opts.reconnect
	for n := 0; ; n++ {
		t := time.NewTimer(b.wait(n))
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return nil
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.timeout)
		l, err := c.connect(ctx)
		if err == nil {
			if err = c.restore(ctx, l); err == nil {
				if err = c.publish(l); err == nil {
					cancel()
					return l
				}
			}
			l.close()
		}
		cancel()
		if c.ctx.Err() != nil {
			return nil
		}
		c.mu.Lock()
		c.err = fmt.Errorf("%w: reconnect: %w", ErrDisconnected, err)
		c.mu.Unlock()
	}
}

// restore renews the subscriptions and checks the mappings on a new
// connection before anyone else may use it. An error means the connection
// failed; the broker refusing one subscription or mapping is not an error.
func (c *Client) restore(ctx context.Context, l *link) error {
	select {
	case c.subSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.subSem }()
	c.mu.Lock()
	groups := make(map[string]*subGroup, len(c.groups))
	for id, g := range c.groups {
		groups[id] = g
	}
	mappings := make([]*Mapping, 0, len(c.maps))
	for m := range c.maps {
		mappings = append(mappings, m)
	}
	c.mu.Unlock()
	for id, g := range groups {
		if err := c.resubscribe(ctx, l, id, g); err != nil {
			return err
		}
	}
	for _, m := range mappings {
		if err := m.recheck(ctx, l); err != nil {
			return err
		}
	}
	return nil
}
