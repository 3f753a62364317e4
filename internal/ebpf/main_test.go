package ebpf

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs helper modes of re-executed test binaries, and otherwise the
// tests, failing when they leak goroutines or file descriptors.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// Start the runtime poller first, so its descriptors are in the baseline.
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r.Close()
	w.Close()
	before := openFDs()

	code := m.Run()
	cleanupHelpers()
	if code != 0 {
		return code
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
		return 1
	}
	if after := openFDs(); len(after) != len(before) {
		fmt.Fprintf(os.Stderr, "leaked file descriptors:\nbefore: %v\nafter:  %v\n", before, after)
		return 1
	}
	return 0
}
