//go:build amd64 && !purego

package simd

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/cpu"
)

// wantImpl returns the implementation that COMMY_SIMD=env should select on
// this CPU, derived from the CPU flags rather than from supported.
func wantImpl(env string) string {
	want := "generic"
	bmi := cpu.X86.HasBMI1 && cpu.X86.HasBMI2 && cpu.X86.HasPOPCNT
	if cpu.X86.HasAVX2 && bmi {
		want = "avx2"
	}
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && bmi {
		want = "avx512"
	}
	switch env {
	case "generic":
		want = "generic"
	case "avx2":
		if want == "avx512" {
			want = "avx2"
		}
	}
	return want
}

// TestImpl fails if a build on a CPU with AVX2 silently runs the portable
// loop.
func TestImpl(t *testing.T) {
	env := os.Getenv("COMMY_SIMD")
	if got, want := Impl(), wantImpl(env); got != want {
		t.Fatalf("COMMY_SIMD=%q: Impl() = %q, want %q", env, got, want)
	}
}

// TestEnvSwitch runs this test binary with each COMMY_SIMD value and checks
// which implementation init chose.
func TestEnvSwitch(t *testing.T) {
	for _, env := range []string{"", "generic", "avx2", "avx512", "unknown"} {
		t.Run("COMMY_SIMD="+env, func(t *testing.T) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "COMMY_SIMD_TEST_PRINT_IMPL=1", "COMMY_SIMD="+env,
				// A -race child otherwise sleeps 1 s at exit.
				"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v", err)
			}
			if got, want := string(out), wantImpl(env); got != want {
				t.Fatalf("Impl() = %q, want %q", got, want)
			}
		})
	}
}
