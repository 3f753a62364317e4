package ebpf

// Regenerating needs clang, llvm-strip and libbpf's headers (see doc.go).
// The second step records digests of the sources and objects, so that
// TestGeneratedUpToDate fails a plain go test when a source was edited
// without regenerating.

//go:generate go tool bpf2go -tags linux -type event probe probe.c -- -Wall -Werror
//go:generate go run ./internal/cmd/srcdigest -o probe_digest.go -sources probe.c,kernel.h,gen.go -objects probe_bpfel.o,probe_bpfeb.o
