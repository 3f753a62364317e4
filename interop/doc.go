// Package interop checks that a client written in another language from the
// documents alone (docs/protocol.md, docs/shm-layout.md) works with the
// broker. It holds only tests and the Python client they run.
package interop
