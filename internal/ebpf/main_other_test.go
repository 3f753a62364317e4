//go:build !linux

package ebpf

const helperEnv = "COMMY_EBPF_TEST_HELPER"

func runHelper(string) int { return 2 }
func cleanupHelpers()      {}
func openFDs() []string    { return nil }
