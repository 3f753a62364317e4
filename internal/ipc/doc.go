// Package ipc is commy's wire protocol v1: length-prefixed CBOR frames over a
// Unix stream socket, the messages they carry, the error codes, peer
// credentials (SO_PEERCRED) and descriptor passing (SCM_RIGHTS).
//
// docs/protocol.md is the contract this package implements.
package ipc
