// Package paths resolves commy's default socket and data directory, so that
// the broker, the CLI and the Go SDK agree on them.
package paths
