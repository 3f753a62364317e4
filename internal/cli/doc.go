// Package cli is the commy command line: `commy serve` runs the broker and
// the other commands inspect and change it over the same protocol, through
// the client package.
package cli
