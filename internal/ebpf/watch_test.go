package ebpf

import (
	"strings"
	"testing"
)

func TestCheckPath(t *testing.T) {
	for _, c := range []struct {
		name, path string
		ok         bool
	}{
		{"empty", "", true},
		{"absolute", "/var/lib/commy/t/s.mem", true},
		{"longest", "/" + strings.Repeat("a", maxPathLen-1), true},
		{"too long", "/" + strings.Repeat("a", maxPathLen), false},
		{"relative", "t/s.mem", false},
		{"double slash", "/var//s.mem", false},
		{"dot dot", "/var/../s.mem", false},
		{"trailing slash", "/var/s.mem/", false},
		{"nul", "/var/s\x00.mem", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := checkPath(c.path); (err == nil) != c.ok {
				t.Errorf("checkPath(%q) = %v, want ok=%t", c.path, err, c.ok)
			}
		})
	}
}

func TestOpString(t *testing.T) {
	for op, want := range map[Op]string{OpOpen: "open", OpMmap: "mmap", 0: "op(0)", 9: "op(9)"} {
		if got := op.String(); got != want {
			t.Errorf("Op(%d).String() = %q, want %q", op, got, want)
		}
	}
}
