package ebpf

import (
	"testing"

	"github.com/commy/commy/internal/ebpf/internal/srcdigest"
)

// TestGeneratedUpToDate fails when probe.c, kernel.h or gen.go changed since
// the committed objects were generated, or the objects were replaced.
func TestGeneratedUpToDate(t *testing.T) {
	for _, c := range []struct {
		name  string
		files []string
		want  string
	}{
		{"sources", generatedSources, generatedSourceDigest},
		{"objects", generatedObjects, generatedObjectDigest},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := srcdigest.Sum(".", c.files...)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("%v: digest %s, generated from %s: the BPF objects are stale; run go generate ./ebpf/ (needs clang, llvm, libbpf-dev)", c.files, got, c.want)
			}
		})
	}
}
