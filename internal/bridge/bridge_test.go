package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/bridge"
)

func threeHosts(t *testing.T, c *cluster) []*host {
	return []*host{newHost(t, "a", c, false, nil), newHost(t, "b", c, false, nil), newHost(t, "c", c, false, nil)}
}

func TestConvergence(t *testing.T) {
	c := newCluster(t, 0)
	hs := threeHosts(t, c)
	for _, h := range hs {
		<-h.br.Ready()
	}
	// A service created on one host appears on the others; each host's
	// writes reach every host.
	sa := hs[0].service("fed", "cfg")
	hs[0].set(sa, "x", "from-a")
	waitValue(t, hs, "fed", "cfg", "x", "from-a")
	for i, h := range hs {
		s := h.service("fed", "cfg")
		h.set(s, "v"+h.name, "value-"+h.name)
		h.set(s, "x", "x-"+h.name)
		_ = i
	}
	for _, h := range hs {
		waitValue(t, hs, "fed", "cfg", "v"+h.name, "value-"+h.name)
	}
	// Deletion of a variable, then of the service, propagates.
	sb := hs[1].service("fed", "cfg")
	if err := sb.Deallocate(context.Background(), "va"); err != nil {
		t.Fatal(err)
	}
	waitGone(t, hs, "fed", "cfg", "va")
	if err := hs[2].cl.DeleteService(context.Background(), "fed", "cfg"); err != nil {
		t.Fatal(err)
	}
	waitGone(t, hs, "fed", "cfg", "")
	// A service outside the patterns stays local.
	so := hs[0].service("local", "only")
	hs[0].set(so, "x", "mine")
	sf := hs[0].service("fed", "later")
	hs[0].set(sf, "y", "1")
	waitValue(t, hs, "fed", "later", "y", "1")
	if _, err := hs[1].read("local", "only", "x"); err == nil {
		t.Fatal("a service that is not federated reached another host")
	}
}

// TestNoEcho: a value applied from the stream is not published again, and
// every stream message is a write some application made.
func TestNoEcho(t *testing.T) {
	c := newCluster(t, 0)
	hs := threeHosts(t, c)
	sa := hs[0].service("fed", "echo")
	for i := range 5 {
		hs[0].set(sa, fmt.Sprintf("k%d", i), "a")
	}
	waitValue(t, hs, "fed", "echo", "k4", "a")
	sc := hs[2].service("fed", "echo") // the bridge made it: found, not created
	hs[2].set(sc, "marker", "c")
	waitValue(t, hs, "fed", "echo", "marker", "c")
	// A write of the value a host already holds changes nothing to send.
	sb := hs[1].service("fed", "echo")
	hs[1].set(sb, "k0", "a")
	// Once more around: anything echoed before the marker is in by now.
	hs[1].set(sb, "marker2", "b")
	waitValue(t, hs, "fed", "echo", "marker2", "b")
	info := c.streamInfo()
	got := bridge.CountsOf(hs[0].br).Published + bridge.CountsOf(hs[1].br).Published + bridge.CountsOf(hs[2].br).Published
	if info.State.Msgs != uint64(got) || got > 8 {
		t.Fatalf("stream holds %d messages, bridges published %v; want the writes only (at most 8: creation, 5 values, 2 markers)", info.State.Msgs, got)
	}
	for _, h := range hs[1:] {
		if p := bridge.CountsOf(h.br).Published; p != 1 {
			t.Errorf("%s published %v batches, want 1 (its marker)", h.name, p)
		}
	}
}

// TestConcurrentWrites: two hosts write one variable at the same time; once
// they stop, every host holds the value of the last message JetStream
// ordered.
func TestConcurrentWrites(t *testing.T) {
	c := newCluster(t, 0)
	hs := threeHosts(t, c)
	sa := hs[0].service("fed", "race")
	hs[0].set(sa, "x", "init")
	waitValue(t, hs, "fed", "race", "x", "init")
	sb := hs[1].service("fed", "race")
	var wg sync.WaitGroup
	for i, p := range []struct {
		h *host
		s *client.Service
	}{{hs[0], sa}, {hs[1], sb}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 100 {
				if _, err := p.s.Write(context.Background(), "x", []byte(fmt.Sprintf("%s-%d", p.h.name, n))); err != nil {
					t.Error(err)
					return
				}
				if n%10 == i {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	_, js := c.connect()
	// The last message that carries x, once the stream stops growing.
	var want string
	waitFor(t, "stream and hosts to settle", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "COMMY")
		if err != nil {
			return false
		}
		m, err := s.GetLastMsgForSubject(ctx, "commy.fed.race")
		if err != nil {
			return false
		}
		_, vals, err := bridge.DecodeValues(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		v, ok := vals["x"]
		if !ok {
			return false
		}
		want = v
		for _, h := range hs {
			got, err := h.read("fed", "race", "x")
			if err != nil || string(got) != want {
				return false
			}
		}
		return true
	})
	if !strings.HasSuffix(want, "-99") {
		t.Fatalf("settled on %q: a host's last write was lost", want)
	}
	// Stable: nothing moves afterwards.
	time.Sleep(300 * time.Millisecond)
	waitValue(t, hs, "fed", "race", "x", want)
}

// TestBatchStaysBatch: a ReportVariableChanges on one host arrives as one
// batch on the others: each notice there names both variables.
func TestBatchStaysBatch(t *testing.T) {
	c := newCluster(t, 0)
	hs := threeHosts(t, c)
	sa := hs[0].service("fed", "batch")
	hs[0].set(sa, "a", "0")
	hs[0].set(sa, "b", "0")
	waitValue(t, hs, "fed", "batch", "b", "0")
	sb := hs[1].service("fed", "batch")
	sub, err := sb.Subscribe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	m, err := sb.Map(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const n = 200
	done := make(chan error, 1)
	go func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			nt, err := sub.Next(ctx)
			cancel()
			if err != nil {
				done <- err
				return
			}
			if len(nt.Variables) != 2 {
				done <- fmt.Errorf("notice names %v: half a batch", nt.Variables)
				return
			}
			a, _, _ := m.Read("a", nil)
			bv, _, _ := m.Read("b", nil)
			if string(a) == fmt.Sprint(n) && string(bv) == fmt.Sprint(n) {
				done <- nil
				return
			}
		}
	}()
	for i := 1; i <= n; i++ {
		v := []byte(fmt.Sprint(i))
		if err := sa.Report(context.Background(), []client.NamedValue{{Name: "a", Value: v}, {Name: "b", Value: v}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// writeMany writes k<from>..k<to-1> on s, one variable each.
func writeMany(h *host, s *client.Service, prefix string, from, to int, during func(i int)) {
	h.t.Helper()
	for i := from; i < to; i++ {
		if during != nil {
			during(i)
		}
		h.set(s, fmt.Sprintf("%s%d", prefix, i), fmt.Sprintf("v%d", i))
	}
}

func waitMany(t *testing.T, hs []*host, svc, prefix string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		waitValue(t, hs, "fed", svc, fmt.Sprintf("%s%d", prefix, i), fmt.Sprintf("v%d", i))
	}
}

// TestNATSNodeRestart: a NATS node stops during writes and comes back; the
// cluster keeps its quorum and nothing is lost.
func TestNATSNodeRestart(t *testing.T) {
	c := newCluster(t, 0)
	hs := threeHosts(t, c)
	sa := hs[0].service("fed", "node")
	writeMany(hs[0], sa, "k", 0, 150, func(i int) {
		switch i {
		case 30:
			c.stop(1)
		case 100:
			c.start(1)
		}
	})
	waitMany(t, hs, "node", "k", 0, 150)
	sc := hs[2].service("fed", "node")
	writeMany(hs[2], sc, "c", 0, 10, nil)
	waitMany(t, hs, "node", "c", 0, 10)
}

// TestBridgeRestart: a bridge stopped during writes catches up from where
// it stopped, without replaying the stream, and publishes what its host
// wrote meanwhile.
func TestBridgeRestart(t *testing.T) {
	c := newCluster(t, 0)
	hs := threeHosts(t, c)
	sa := hs[0].service("fed", "restart")
	b := hs[1]
	// One batch each: the saved position is then well past the start.
	for i := range 50 {
		writeMany(hs[0], sa, "k", i, i+1, nil)
		waitMany(t, []*host{b}, "restart", "k", i, i+1)
	}
	writeMany(hs[0], sa, "k", 50, 100, func(i int) {
		if i == 60 {
			b.stopBridge()
		}
	})
	saved := savedSeq(t, b)
	if saved < 50 {
		t.Fatalf("saved position %d, want 50 or more", saved)
	}
	// a writes k10, then b does while its bridge is away: b's write is the
	// later one and must win when b's bridge comes back, although the
	// stream has a's value after b's saved position.
	hs[0].set(sa, "k10", "a-later")
	waitValue(t, []*host{hs[2]}, "fed", "restart", "k10", "a-later")
	sb := b.service("fed", "restart")
	b.set(sb, "k10", "while-away")
	b.set(sb, "bw", "b-was-here")
	b.startBridge()
	waitMany(t, hs, "restart", "k", 50, 100)
	waitValue(t, hs, "fed", "restart", "k10", "while-away")
	waitValue(t, hs, "fed", "restart", "bw", "b-was-here")
	// Resumed, not replayed: the new run applied only batches after the
	// saved position.
	info := c.streamInfo()
	if n := bridge.CountsOf(b.br).Applied; n > float64(int(info.State.LastSeq)-saved) || n == 0 {
		t.Fatalf("the restarted bridge applied %v batches; want 1 to %d (those after sequence %d of %d)", n, int(info.State.LastSeq)-saved, saved, info.State.LastSeq)
	}
}

// TestBrokerKilled: the broker of a bridged host is killed with SIGKILL and
// restarted; what other hosts wrote meanwhile arrives, and its own writes
// go out again.
func TestBrokerKilled(t *testing.T) {
	c := newCluster(t, 0)
	a, b := newHost(t, "a", c, false, nil), newHost(t, "b", c, true, nil)
	hs := []*host{a, b}
	sa := a.service("fed", "kill")
	writeMany(a, sa, "k", 0, 20, nil)
	waitMany(t, hs, "kill", "k", 0, 20)
	b.kill()
	writeMany(a, sa, "k", 20, 40, nil)
	b.startChild()
	waitMany(t, hs, "kill", "k", 20, 40)
	sb := b.service("fed", "kill")
	b.set(sb, "fromb", "after-restart")
	waitValue(t, hs, "fed", "kill", "fromb", "after-restart")
}

// TestNATSUnreachable: the whole NATS cluster is away for a while; writes
// made meanwhile on every host are kept and sent once it is back.
func TestNATSUnreachable(t *testing.T) {
	c := newCluster(t, 0)
	hs := threeHosts(t, c)
	sa := hs[0].service("fed", "away")
	hs[0].set(sa, "x", "before")
	waitValue(t, hs, "fed", "away", "x", "before")
	for i := range 3 {
		c.stop(i)
	}
	hs[0].set(sa, "x", "during")
	writeMany(hs[1], hs[1].service("fed", "away"), "b", 0, 20, nil)
	time.Sleep(200 * time.Millisecond)
	for i := range 3 {
		c.start(i)
	}
	waitValue(t, hs, "fed", "away", "x", "during")
	waitMany(t, hs, "away", "b", 0, 20)
}

// TestOutboxBound: while NATS is away, the batches waiting for it are
// merged per service past max_pending, and past that the bridge stops
// taking notices (the broker keeps the values); when NATS is back, every
// value, those written while paused included, reaches the other host.
func TestOutboxBound(t *testing.T) {
	c := newCluster(t, 0)
	a := newHost(t, "a", c, false, func(cfg *bridge.Config) { cfg.MaxPending = 2 })
	b := newHost(t, "b", c, false, nil)
	<-a.br.Ready()
	<-b.br.Ready()
	const nsvc = 5
	var svcs []*client.Service
	for i := range nsvc {
		s := a.service("fed", fmt.Sprintf("q%d", i))
		a.set(s, "x", "before")
		svcs = append(svcs, s)
	}
	for i := range nsvc {
		waitValue(t, []*host{b}, "fed", fmt.Sprintf("q%d", i), "x", "before")
	}
	for i := range 3 {
		c.stop(i)
	}
	for r := range 4 {
		for _, s := range svcs {
			a.set(s, "x", fmt.Sprintf("r%d", r))
			a.set(s, fmt.Sprintf("y%d", r), "v")
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, "a's outbox merged and paused", func() bool {
		n := bridge.CountsOf(a.br)
		return n.Merged > 0 && n.Paused > 0
	})
	for _, s := range svcs {
		a.set(s, "z", "while paused")
	}
	for i := range 3 {
		c.start(i)
	}
	for i := range nsvc {
		svc := fmt.Sprintf("q%d", i)
		waitValue(t, []*host{b}, "fed", svc, "x", "r3")
		waitValue(t, []*host{b}, "fed", svc, "z", "while paused")
		for r := range 4 {
			waitValue(t, []*host{b}, "fed", svc, fmt.Sprintf("y%d", r), "v")
		}
	}
}

// TestTooLarge: a value over the NATS message limit is refused, counted and
// logged; the rest of the batch and later values still go.
func TestTooLarge(t *testing.T) {
	c := newCluster(t, 64<<10)
	hs := threeHosts(t, c)[:2]
	sa := hs[0].service("fed", "big")
	hs[0].set(sa, "small", "1")
	hs[0].set(sa, "huge", "1")
	waitValue(t, hs, "fed", "big", "small", "1")
	waitValue(t, hs, "fed", "big", "huge", "1")
	// One batch: the huge value is refused, the small one goes.
	if err := sa.Report(context.Background(), []client.NamedValue{{Name: "small", Value: []byte("2")}, {Name: "huge", Value: make([]byte, 100<<10)}}); err != nil {
		t.Fatal(err)
	}
	hs[0].set(sa, "after", "3")
	waitValue(t, hs, "fed", "big", "after", "3")
	waitValue(t, hs, "fed", "big", "small", "2")
	waitValue(t, hs[1:], "fed", "big", "huge", "1")
	if n := bridge.CountsOf(hs[0].br); n.TooLarge != 1 || n.Split != 0 {
		t.Fatalf("too_large refusals %v, split batches %v; want 1 refused before sending, none split", n.TooLarge, n.Split)
	}
}

// savedSeq is the stream position a stopped bridge saved.
func savedSeq(t *testing.T, h *host) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.cfg.StateDir, "bridge-state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		LastSeq int `json:"last_seq"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st.LastSeq
}
