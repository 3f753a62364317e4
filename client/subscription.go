package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/commy/commy/internal/ipc"
)

// Notice says which variables of a service changed, with their versions. A
// version of 0 means the variable (or the whole service) was deleted.
type Notice struct {
	ServiceID string
	Variables []string
	Versions  []uint64
}

// Subscription delivers the VariablesUpdated notices of one service. Notices
// that arrive while the application is not calling Next merge into one, with
// the latest version of each variable, so the connection's reader never
// waits for the application and memory stays bounded. It is safe for
// concurrent use.
//
// With WithReconnect a Subscription outlives a lost connection: once the
// client is back, Next reports every variable whose version moved while it
// was away (0 for those that went), then live changes again. If the broker
// no longer has the service, the Subscription ends with its error.
type Subscription struct {
	c      *Client
	svcID  string
	filter map[string]bool // nil: every variable

	mu     sync.Mutex
	order  []string
	vers   map[string]uint64
	err    error
	ended  bool
	signal chan struct{} // a token when notices wait; closed when ended
}

// subGroup is every Subscription of one client to one service: the broker
// knows one subscription per service and connection, asked for the union of
// the variables they name. Guarded by Client.mu.
type subGroup struct {
	subs  map[*Subscription]struct{}
	all   bool            // some subscription takes every variable
	names map[string]bool // else the union of their names
	seen  map[string]uint64
}

func newGroup() *subGroup {
	return &subGroup{subs: map[*Subscription]struct{}{}, names: map[string]bool{}, seen: map[string]uint64{}}
}

// request is the variable list to ask the broker for (nil: every variable).
func (g *subGroup) request() []string {
	if g.all {
		return nil
	}
	out := make([]string, 0, len(g.names))
	for n := range g.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// covers reports whether the group already asks for every name in names (all
// of them when names is empty).
func (g *subGroup) covers(names []string) bool {
	if g.all {
		return true
	}
	if len(names) == 0 {
		return false
	}
	for _, n := range names {
		if !g.names[n] {
			return false
		}
	}
	return true
}

// widen adds names to what the group asks for.
func (g *subGroup) widen(names []string) {
	if len(names) == 0 {
		g.all = true
		return
	}
	for _, n := range names {
		g.names[n] = true
	}
}

// sawLocked records the versions the broker announced, for the catch-up after a
// reconnect.
func (g *subGroup) sawLocked(names []string, vers []uint64) {
	for i, n := range names {
		if !g.all && !g.names[n] {
			continue
		}
		if vers[i] == 0 {
			delete(g.seen, n)
		} else {
			g.seen[n] = max(g.seen[n], vers[i])
		}
	}
}

// Subscribe asks for notices of changes to the named variables (all when
// none are named). A service may have several Subscriptions on one client:
// the broker is asked for the union of their variables and each receives
// only its own.
//
// The broker sends no notice to the connection that made the change: writes,
// reports and deallocations through this Client never show up on its own
// Subscriptions. To watch your own writes, subscribe from a second Client.
func (s *Service) Subscribe(ctx context.Context, names ...string) (*Subscription, error) {
	c := s.c
	sub := &Subscription{c: c, svcID: s.ID, vers: map[string]uint64{}, signal: make(chan struct{}, 1)}
	if len(names) > 0 {
		sub.filter = make(map[string]bool, len(names))
		for _, n := range names {
			sub.filter[n] = true
		}
	}
	select {
	case c.subSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.subSem }()

	c.mu.Lock()
	if c.final {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	g := c.groups[s.ID]
	fresh := g == nil
	if fresh {
		g = newGroup()
		c.groups[s.ID] = g
	}
	ask := fresh || !g.covers(names)
	var want []string
	if ask {
		// The broker replaces the old list only once the request succeeds.
		next := &subGroup{all: g.all, names: maps.Clone(g.names)}
		next.widen(names)
		want = next.request()
	}
	g.subs[sub] = struct{}{}
	c.mu.Unlock()
	if !ask {
		return sub, nil
	}
	_, err := call[*ipc.Subscribed](ctx, c, &ipc.Subscribe{ServiceID: s.ID, Variables: want})
	var vars *ipc.Variables
	if err == nil && fresh && c.opts.reconnect != nil {
		// Versions to compare with after a reconnect; best effort.
		vars, _ = call[*ipc.Variables](ctx, c, &ipc.ListVariables{ServiceID: s.ID})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		delete(g.subs, sub)
		if len(g.subs) == 0 && c.groups[s.ID] == g {
			delete(c.groups, s.ID)
		}
		return nil, err
	}
	g.widen(names)
	if vars != nil {
		for _, v := range vars.Variables {
			if g.all || g.names[v.Name] {
				g.seen[v.Name] = max(g.seen[v.Name], v.Version)
			}
		}
	}
	return sub, nil
}

// resubscribe renews a group on a new connection, then tells its
// subscriptions about every variable whose version moved while the client
// was away, and about those that went (version 0). If the broker refuses
// (the service is gone) the subscriptions end with its error.
func (c *Client) resubscribe(ctx context.Context, l *link, id string, g *subGroup) error {
	c.mu.Lock()
	want := g.request()
	c.mu.Unlock()
	_, err := callOn[*ipc.Subscribed](ctx, c, l, &ipc.Subscribe{ServiceID: id, Variables: want})
	var vars *ipc.Variables
	if err == nil {
		vars, err = callOn[*ipc.Variables](ctx, c, l, &ipc.ListVariables{ServiceID: id})
	}
	if err != nil && !remote(err) {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	var vers []uint64
	now := map[string]bool{}
	if vars != nil {
		for _, v := range vars.Variables {
			if !g.all && !g.names[v.Name] {
				continue
			}
			now[v.Name] = true
			// A version above the listed one came in a notice on the new
			// connection, and was delivered.
			if seen, ok := g.seen[v.Name]; !ok || seen < v.Version {
				names, vers = append(names, v.Name), append(vers, v.Version)
				g.seen[v.Name] = v.Version
			}
		}
	}
	for n := range g.seen {
		if !now[n] {
			names, vers = append(names, n), append(vers, 0)
			delete(g.seen, n)
		}
	}
	if err != nil && c.groups[id] == g {
		delete(c.groups, id)
	}
	// Delivered under c.mu: a notice the reader records after this is
	// delivered after it, so no older version overwrites a newer one.
	for s := range g.subs {
		if len(names) > 0 {
			s.deliver(names, vers)
		}
		if err != nil {
			s.end(fmt.Errorf("client: renew subscription to %s: %w", id, err))
		}
	}
	return nil
}

// deliver merges a notice into what Next will return.
func (s *Subscription) deliver(names []string, vers []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	added := false
	for i, n := range names {
		if s.filter != nil && !s.filter[n] {
			continue
		}
		if _, ok := s.vers[n]; !ok {
			s.order = append(s.order, n)
		}
		s.vers[n] = vers[i]
		added = true
	}
	if !added {
		return
	}
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// end closes the subscription with err; notices already merged stay for Next.
func (s *Subscription) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.ended, s.err = true, err
	close(s.signal)
}

// Next waits for the next notice. Everything that changed since the last call
// comes in one Notice, in the order the variables first changed. After Close,
// or when the client ends, it returns the reason (ErrClosed, ErrDisconnected)
// once pending notices are taken.
func (s *Subscription) Next(ctx context.Context) (Notice, error) {
	for {
		if n, ok, err := s.take(); ok || err != nil {
			return n, err
		}
		select {
		case <-s.signal:
		case <-ctx.Done():
			return Notice{}, ctx.Err()
		}
	}
}

// take returns the merged notice if there is one, else the reason the
// subscription ended, if it did.
func (s *Subscription) take() (Notice, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) == 0 {
		return Notice{}, false, s.err
	}
	n := Notice{ServiceID: s.svcID, Variables: s.order, Versions: make([]uint64, len(s.order))}
	for i, name := range s.order {
		n.Versions[i] = s.vers[name]
	}
	s.order = nil
	clear(s.vers)
	return n, true, nil
}

// Close ends the subscription; the broker is told once no other
// Subscription of this client wants the service. It is safe to call more
// than once.
func (s *Subscription) Close() error {
	s.end(ErrClosed)
	c := s.c
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.timeout)
	defer cancel()
	held := false
	select {
	case c.subSem <- struct{}{}:
		held = true
		defer func() { <-c.subSem }()
	case <-ctx.Done():
	}
	c.mu.Lock()
	g := c.groups[s.svcID]
	if g == nil {
		c.mu.Unlock()
		return nil
	}
	if _, ok := g.subs[s]; !ok {
		c.mu.Unlock()
		return nil
	}
	delete(g.subs, s)
	last := len(g.subs) == 0
	if last {
		delete(c.groups, s.svcID)
	}
	c.mu.Unlock()
	if !last || !held {
		return nil
	}
	_, err := call[*ipc.Unsubscribed](ctx, c, &ipc.Unsubscribe{ServiceID: s.svcID})
	if errors.Is(err, ErrDisconnected) || errors.Is(err, ErrClosed) || c.ctx.Err() != nil {
		return nil // nothing to unsubscribe from
	}
	return err
}
