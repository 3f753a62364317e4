/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * The few kernel types probe.c needs, instead of a multi-megabyte vmlinux.h.
 * The structs carry preserve_access_index, so only the named fields must
 * exist in the running kernel's BTF: the loader relocates their offsets (CO-RE).
 */
#ifndef COMMY_KERNEL_H
#define COMMY_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* Corresponds to enum bpf_map_type in include/uapi/linux/bpf.h. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};

/* Corresponds to BPF_F_NO_PREALLOC in include/uapi/linux/bpf.h. */
#define BPF_F_NO_PREALLOC (1U << 0)

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/* x86_64 register frame; at sys_exit orig_ax holds the syscall number. */
struct pt_regs {
	unsigned long bp;
	unsigned long bx;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
};

struct thread_info {
	__u32 status;
};

struct super_block {
	__u32 s_dev; /* kernel dev_t: major << 20 | minor */
};

struct inode {
	struct super_block *i_sb;
	unsigned long i_ino;
};

struct file {
	struct inode *f_inode;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	struct thread_info thread_info;
	struct files_struct *files;
};

struct trace_entry {
	unsigned short type;
};

/* Context of tracepoint/raw_syscalls/sys_exit. */
struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
};

#pragma clang attribute pop

/* Corresponds to struct bpf_raw_tracepoint_args in include/uapi/linux/bpf.h. */
struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

/* Corresponds to struct open_how in include/uapi/linux/openat2.h (user memory, fixed ABI). */
struct open_how {
	__u64 flags;
	__u64 mode;
	__u64 resolve;
};

#endif
