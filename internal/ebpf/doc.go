// Package ebpf audits every access to commy's service files with an eBPF
// probe, including accesses that bypass the broker: who (pid, tid, uid, gid,
// comm, executable) opened or mapped which file (device and inode), with what
// flags and result, when, and whether it was the broker itself.
//
// One program runs at system call exit. It dispatches on the system call
// number, so other system calls cost a few compares. For open, openat,
// openat2, creat and open_by_handle_at that succeed it resolves the returned
// descriptor, and for mmap the mapped descriptor, to (device, inode) through
// the task's fd table and looks that up in a hash map of watched files. A
// client that received a descriptor over SCM_RIGHTS is therefore seen when it
// maps it, and memfds are matched by inode like files. Failed mmaps of a
// watched descriptor (say, PROT_WRITE on a read-only one) are reported too.
// An open refused with EACCES or EPERM has no descriptor, so its path argument
// is read from user memory and looked up in a second map of watched absolute
// paths. Events reach user space through a BPF ring buffer.
//
// The program is attached at the first of these that works:
// tp_btf/sys_exit, raw_tracepoint/sys_exit, tracepoint/raw_syscalls/sys_exit
// (the last needs tracefs mounted). All need kernel BTF
// (/sys/kernel/btf/vmlinux) and CAP_BPF with CAP_PERFMON, or root; by the
// helpers they use, tp_btf needs Linux 6.2, raw_tracepoint 5.8 and
// tracepoint 5.15. When none works Load returns an error matching
// ErrNotSupported that keeps every cause. On kernels before 5.11 BPF memory
// counts against RLIMIT_MEMLOCK, which the caller must raise (for example
// with github.com/cilium/ebpf/rlimit.RemoveMemlock); this package does not
// change process limits.
//
// While the probe is attached every system call on the machine takes the
// kernel's slower exit path that syscall tracing needs; docs/benchmarks.md
// has the cost.
//
// Limitations:
//   - System calls are decoded for x86_64 kernels only; Load returns
//     ErrNotSupported elsewhere. i386 system calls (32-bit processes, int
//     0x80) are decoded from their own table; the machine the tests ran on
//     cannot execute them, so that path is checked by the verifier only.
//   - A refused open is matched by the exact path string that was watched:
//     relative paths, extra slashes, "." or ".." and symlinks are not matched.
//     Opens that fail with other errors are not reported. Successful opens are
//     matched by inode whatever the path. Watched paths are at most 254 bytes.
//   - Devices are compared as the inode's superblock device. On btrfs
//     subvolumes and some overlayfs setups stat(2) reports another st_dev,
//     and such files are not matched.
//   - Opens issued through io_uring do not pass the system call exit and are
//     not seen. Descriptors obtained without an open (SCM_RIGHTS, pidfd_getfd,
//     inheritance) are seen only when mapped; read(2) and write(2) are not
//     reported.
//   - PID, UID (real) and GID are as seen from the initial namespaces;
//     Options.SelfPID must be given in the same terms when the broker runs in
//     a PID namespace. Exe is read from /proc when Read returns the event and
//     is empty if the process is gone.
//
// # Regenerating
//
// probe.c and kernel.h are compiled into probe_bpfel.o and probe_bpfeb.o by
// bpf2go, which needs clang, llvm-strip and libbpf's headers (Debian:
// apt-get install clang llvm libbpf-dev). Run "go generate ./ebpf/".
// TestGeneratedUpToDate fails when the committed objects do not match the
// sources.
package ebpf
