//go:build !amd64 || purego

package simd

import "testing"

func TestImpl(t *testing.T) {
	if got := Impl(); got != "generic" {
		t.Fatalf("Impl() = %q, want %q in a build without assembly", got, "generic")
	}
}
