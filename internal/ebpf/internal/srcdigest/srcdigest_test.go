package srcdigest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSum(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "ab")
	write("b", "c")
	sum := func(names ...string) string {
		t.Helper()
		s, err := Sum(dir, names...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := sum("a", "b")
	if sum("a", "b") != base {
		t.Error("Sum is not deterministic")
	}
	if sum("b", "a") == base {
		t.Error("Sum ignores the order of files")
	}
	write("a", "a")
	write("b", "bc")
	if sum("a", "b") == base {
		t.Error("Sum ignores where one file ends and the next begins")
	}
	if _, err := Sum(dir, "missing"); err == nil {
		t.Error("Sum of a missing file succeeded")
	}
}
