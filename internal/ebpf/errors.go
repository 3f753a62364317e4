package ebpf

import "errors"

var (
	// ErrNotSupported: the kernel, architecture or privileges do not allow the
	// probe. Load wraps it together with the cause.
	ErrNotSupported = errors.New("ebpf: not supported")
	// ErrClosed: the probe was closed.
	ErrClosed = errors.New("ebpf: probe closed")
	// ErrNotWatched: Unwatch named a file and path that are not watched.
	ErrNotWatched = errors.New("ebpf: not watched")
)
