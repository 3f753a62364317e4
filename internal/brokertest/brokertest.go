// Package brokertest serves an in-process broker for the tests of other
// packages. It is a package of its own because internal/testutil, which the
// broker's dependencies test with, cannot import the broker.
package brokertest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/commy/commy/broker"
)

// Serve serves a broker with cfg (its DataDir set to a new directory) on a
// socket, mode 0666, in a directory short enough for any socket path, until
// the test ends; the end checks that the broker closed cleanly.
func Serve(t testing.TB, cfg broker.Config) (*broker.Broker, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg.DataDir = filepath.Join(dir, "data")
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := broker.Listen(sock, 0o666)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve(l) }()
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
		if err := <-served; !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return b, sock
}
