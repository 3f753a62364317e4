//go:build linux

package ebpf

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestKernelDev(t *testing.T) {
	for _, c := range []struct {
		name         string
		major, minor uint32
		ok           bool
	}{
		{"zero", 0, 0, true},
		{"sda1", 8, 1, true},
		{"virtio", 254, 0, true},
		{"nvme wide minor", 259, 70000, true},
		{"largest", 1<<12 - 1, 1<<20 - 1, true},
		{"major too large", 1 << 12, 0, false},
		{"minor too large", 0, 1 << 20, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := unix.Mkdev(c.major, c.minor)
			k, err := kernelDev(st)
			if !c.ok {
				if err == nil {
					t.Fatalf("kernelDev(%d:%d) = %#x, want error", c.major, c.minor, k)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := uint64(c.major)<<20 | uint64(c.minor); k != want {
				t.Errorf("kernelDev(%d:%d) = %#x, want %#x", c.major, c.minor, k, want)
			}
			if back := userDev(k); back != st {
				t.Errorf("userDev(%#x) = %#x, want %#x", k, back, st)
			}
		})
	}
}
