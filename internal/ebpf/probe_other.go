//go:build !linux

package ebpf

import (
	"fmt"
	"time"
)

// Probe is a loaded and attached audit probe; it needs Linux.
type Probe struct{}

// Load returns an error matching ErrNotSupported: the probe needs Linux.
func Load(Options) (*Probe, error) {
	return nil, fmt.Errorf("%w: the probe needs Linux", ErrNotSupported)
}

// AttachPoint returns "".
func (*Probe) AttachPoint() string { return "" }

// Watch returns ErrNotSupported.
func (*Probe) Watch(string, uint64, uint64) error { return ErrNotSupported }

// Unwatch returns ErrNotSupported.
func (*Probe) Unwatch(string, uint64, uint64) error { return ErrNotSupported }

// Read returns ErrNotSupported.
func (*Probe) Read() (Event, error) { return Event{}, ErrNotSupported }

// SetDeadline does nothing.
func (*Probe) SetDeadline(time.Time) {}

// Stats returns zero counters.
func (*Probe) Stats() Stats { return Stats{} }

// Close returns nil.
func (*Probe) Close() error { return nil }
