package broker_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
)

// TestDeleteTenantRacesCreate: a tenant and service created again while the
// tenant's deletion is under way keep their file: the new service answers,
// can be mapped, and survives a restart with its acknowledged write.
func TestDeleteTenantRacesCreate(t *testing.T) {
	dir := t.TempDir()
	cfg := broker.Config{DataDir: dir + "/data"}
	h := start(t, cfg)
	deleter, creator := h.dial(t), h.dial(t)
	ctx := t.Context()
	const rounds = 20
	for round := range rounds {
		seedService(t, h, "acme", "orders")
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := deleter.DeleteTenant(ctx, "acme"); err != nil {
				t.Errorf("round %d: delete: %v", round, err)
			}
		})
		for {
			err := creator.CreateTenant(ctx, "acme")
			if err == nil {
				break
			}
			if !errors.Is(err, client.ErrAlreadyExists) {
				t.Fatalf("round %d: create tenant: %v", round, err)
			}
		}
		svc, err := creator.CreateService(ctx, "acme", "orders")
		if err != nil {
			t.Fatalf("round %d: create service: %v", round, err)
		}
		if _, err := svc.Allocate(ctx, "v", []byte("new"), 0); err != nil {
			t.Fatalf("round %d: allocate: %v", round, err)
		}
		wg.Wait()
		_, f, err := svc.OpenFile(ctx)
		if err != nil {
			t.Fatalf("round %d: the service made during the deletion lost its file: %v", round, err)
		}
		f.Close()
		if round < rounds-1 {
			if err := creator.DeleteTenant(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
		}
	}
	h.stop(t)
	h2 := start(t, cfg)
	svc, err := h2.dial(t).Service(ctx, "acme", "orders")
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if v, _, err := svc.Read(ctx, "v"); err != nil || string(v) != "new" {
		t.Fatalf("after a restart: v = %q, %v", v, err)
	}
}

// TestDeleteServiceRacesCreate: creating a service while the same name is
// being deleted waits for the deletion and succeeds.
func TestDeleteServiceRacesCreate(t *testing.T) {
	h := start(t, broker.Config{})
	deleter, creator := h.dial(t), h.dial(t)
	ctx := t.Context()
	for round := range 20 {
		seedService(t, h, "acme", "orders")
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := deleter.DeleteService(ctx, "acme", "orders"); err != nil {
				t.Errorf("round %d: delete: %v", round, err)
			}
		})
		for {
			_, err := creator.CreateService(ctx, "acme", "orders")
			if err == nil {
				break
			}
			if !errors.Is(err, client.ErrAlreadyExists) {
				t.Fatalf("round %d: create: %v", round, err)
			}
		}
		wg.Wait()
		if err := creator.DeleteService(ctx, "acme", "orders"); err != nil {
			t.Fatalf("round %d: the new service: %v", round, err)
		}
	}
}

// slowStore is an FDStore whose Store takes a while, like a stalled service
// manager.
type slowStore struct {
	slow    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowStore) Store(name string, f *os.File) error {
	if s.slow.Load() {
		s.entered <- struct{}{}
		<-s.release
	}
	return nil
}

func (s *slowStore) Remove(string) error { return nil }

// TestCreateDoesNotBlockLookups: while a CreateService waits on slow work
// (here the fd store), other requests are answered.
func TestCreateDoesNotBlockLookups(t *testing.T) {
	store := &slowStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	h := start(t, broker.Config{Backend: broker.BackendMemfd, FDStore: store})
	seedService(t, h, "acme", "orders")
	store.slow.Store(true)
	released := false
	release := func() {
		if !released {
			released = true
			close(store.release)
		}
	}
	defer release()
	ctx := t.Context()
	creating := make(chan error, 1)
	c := h.dial(t)
	go func() {
		_, err := c.CreateService(ctx, "acme", "slow")
		creating <- err
	}()
	<-store.entered
	other := h.dial(t)
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := other.Service(lctx, "acme", "orders"); err != nil {
		t.Fatalf("a lookup while a creation waits: %v", err)
	}
	if _, err := other.Service(lctx, "acme", "slow"); !errors.Is(err, client.ErrServiceNotFound) {
		t.Errorf("the service being created: %v, want SERVICE_NOT_FOUND", err)
	}
	release()
	if err := <-creating; err != nil {
		t.Fatal(err)
	}
}
