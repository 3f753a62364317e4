package broker_test

import (
	"fmt"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/testutil"
)

// TestAttackSubscriptionFilters: a uid with read cannot hold more
// subscriptions or filter names than its limits, nor name more variables in
// one filter than a service holds; unsubscribing gives them back, and root
// is not limited.
func TestAttackSubscriptionFilters(t *testing.T) {
	testutil.RequireRoot(t)
	p, err := broker.ParsePolicy([]byte(fmt.Sprintf("[[grant]]\nusers = [%d]\ntenants = [\"acme\"]\nrights = [\"read\"]\n", testutil.Nobody)))
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, broker.Config{Policy: p, MaxSubscriptionsPerUID: 10, MaxFilterNamesPerUID: 2500})
	for i := 0; i <= 10; i++ {
		seedService(t, h, "acme", fmt.Sprint("s", i))
	}
	names := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = fmt.Sprintf("name-that-need-not-exist-%d", i)
		}
		return out
	}
	sub := func(i int, filter []any) map[string]any {
		m := map[string]any{"type": "Subscribe", "service_id": fmt.Sprint("acme_s", i)}
		if filter != nil {
			m["variables"] = filter
		}
		return m
	}
	steps := []map[string]any{
		sub(0, names(1000)), sub(1, names(1000)),
		sub(2, names(1000)), // 3000 names: past the uid's 2500
		sub(2, names(1025)), // past what a service holds
	}
	for i := 2; i <= 10; i++ {
		steps = append(steps, sub(i, nil)) // the 11th subscription is one too many
	}
	steps = append(steps, map[string]any{"type": "Unsubscribe", "service_id": "acme_s0"}, sub(10, nil))
	res := runScript(t, h, testutil.Nobody, testutil.Nobody, steps...)
	want := "Subscribed Subscribed QUOTA_EXCEEDED QUOTA_EXCEEDED" +
		" Subscribed Subscribed Subscribed Subscribed Subscribed Subscribed Subscribed Subscribed QUOTA_EXCEEDED" +
		" Unsubscribed Subscribed"
	if got := replies(res); got != want {
		t.Fatalf("replies:\n got %s\nwant %s", got, want)
	}
	// Everything was given back when the child's connection closed.
	waitFor(t, "the uid's account to go", func() bool {
		u := usageOf(h.b, testutil.Nobody)
		return u.Subscriptions == 0 && u.FilterNames == 0 && u.Connections == 0
	})
	// Root is counted, never refused.
	r := h.raw(t, true)
	for i := 0; i <= 10; i++ {
		if rep := r.do(&ipc.Subscribe{ServiceID: fmt.Sprint("acme_s", i)}); rep.Kind() != "Subscribed" {
			t.Fatalf("root's subscription %d: %#v", i, rep)
		}
	}
}
