// Package shm holds a commy service file: the byte layout of its header, its
// variable directory and its value slots, the broker's writer that creates,
// grows and recovers it, and the read-only Mapping that clients read values
// from without locks or system calls.
//
// The layout is specified byte for byte in docs/shm-layout.md. Every variable
// has two value slots and a seqlock: a write fills the slot readers are not
// using, then publishes it with one 8-byte store, so a reader never sees a torn
// value and a crash at any point leaves either the old or the new value.
package shm
