//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * One sys_exit program, built for three attach points, that reports opens and
 * mmaps of watched files. Unrelated system calls cost a few compares on the
 * syscall number; unrelated opens and mmaps cost a walk of the fd table and
 * one hash lookup by (device, inode). Only denied opens read the path from
 * user memory.
 */

#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* The probe-read helpers, bpf_get_current_task* and kfuncs need a GPL-compatible license. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define PATH_KEY_LEN 256

/* Corresponds to EPERM and EACCES in include/uapi/asm-generic/errno-base.h. */
#define EPERM 1
#define EACCES 13
/* Corresponds to O_WRONLY, O_CREAT, O_TRUNC on x86 (include/uapi/asm-generic/fcntl.h). */
#define O_WRONLY 01
#define O_CREAT 0100
#define O_TRUNC 01000
/* Corresponds to MAP_ANONYMOUS in include/uapi/asm-generic/mman-common.h. */
#define MAP_ANONYMOUS 0x20
/* Corresponds to TS_COMPAT in arch/x86/include/asm/thread_info.h. */
#define TS_COMPAT 0x0002
/* Corresponds to __X32_SYSCALL_BIT in arch/x86/include/uapi/asm/unistd.h. */
#define X32_SYSCALL_BIT 0x40000000L

/* x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define NR64_OPEN 2
#define NR64_MMAP 9
#define NR64_CREAT 85
#define NR64_OPENAT 257
#define NR64_OPEN_BY_HANDLE_AT 304
#define NR64_OPENAT2 437

/* i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl). */
#define NR32_OPEN 5
#define NR32_CREAT 8
#define NR32_OLD_MMAP 90
#define NR32_MMAP2 192
#define NR32_OPENAT 295
#define NR32_OPEN_BY_HANDLE_AT 342
#define NR32_OPENAT2 437

enum op {
	OP_OPEN = 1,
	OP_MMAP = 2,
};

enum counter {
	COUNTER_EVENTS = 0,
	COUNTER_LOST = 1,
	COUNTER_MAX,
};

/* Identity of a watched file: the kernel's s_dev (not stat's st_dev) and i_ino. */
struct file_key {
	__u64 dev;
	__u64 ino;
};

/* An absolute path, zero-padded. */
struct path_key {
	char path[PATH_KEY_LEN];
};

struct event {
	__u64 boot_ns;
	__u64 dev;
	__u64 ino;
	__s64 result;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 flags;
	__u32 map_flags;
	char comm[16];
	char path[PATH_KEY_LEN];
	__u8 op;
	__u8 pad[7];
};

/* The arguments of one open or mmap, decoded from the register frame. */
struct call {
	__u64 path; /* user pointer, or 0 */
	__u64 how;  /* user pointer to struct open_how (openat2), or 0 */
	__s64 fd;   /* mmap: the descriptor being mapped */
	__u32 flags;
	__u32 map_flags;
	__u8 op;
};

/* Userspace sets max_entries of the maps before loading. The hash maps grow on use. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct file_key);
	__type(value, __u8);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct path_key);
	__type(value, struct file_key);
} watched_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__type(value, struct event); /* for bpf2go -type event; the loader drops it */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no other writer */
}

/*
 * REG reads a register from the frame: a plain load when regs is a BTF pointer
 * (tp_btf), a probe read otherwise. "direct" is a compile-time constant.
 */
#define REG(regs, f) (direct ? (regs)->f : BPF_CORE_READ(regs, f))

static __always_inline bool interesting(long nr)
{
	switch (nr) {
	case NR64_OPEN:
	case NR64_MMAP:
	case NR64_CREAT:
	case NR64_OPENAT:
	case NR64_OPEN_BY_HANDLE_AT:
	case NR64_OPENAT2: /* == NR32_OPENAT2 */
	case NR32_OPEN:
	case NR32_CREAT:
	case NR32_OLD_MMAP:
	case NR32_MMAP2:
	case NR32_OPENAT:
	case NR32_OPEN_BY_HANDLE_AT:
		return true;
	}
	return false;
}

/* decode64 fills c from a 64-bit system call: args in di, si, dx, r10, r8, r9. */
static __always_inline bool decode64(long nr, struct pt_regs *regs, struct call *c, const bool direct)
{
	switch (nr) {
	case NR64_OPEN:
		c->op = OP_OPEN;
		c->path = REG(regs, di);
		c->flags = REG(regs, si);
		return true;
	case NR64_CREAT:
		c->op = OP_OPEN;
		c->path = REG(regs, di);
		c->flags = O_CREAT | O_WRONLY | O_TRUNC;
		return true;
	case NR64_OPENAT:
		c->op = OP_OPEN;
		c->path = REG(regs, si);
		c->flags = REG(regs, dx);
		return true;
	case NR64_OPENAT2:
		c->op = OP_OPEN;
		c->path = REG(regs, si);
		c->how = REG(regs, dx);
		return true;
	case NR64_OPEN_BY_HANDLE_AT:
		c->op = OP_OPEN;
		c->flags = REG(regs, dx);
		return true;
	case NR64_MMAP:
		c->op = OP_MMAP;
		c->flags = REG(regs, dx);
		c->map_flags = REG(regs, r10);
		c->fd = (int)REG(regs, r8);
		return true;
	}
	return false;
}

/* Corresponds to struct mmap_arg_struct32 in arch/x86/kernel/sys_ia32.c. */
struct mmap_arg_struct32 {
	__u32 addr;
	__u32 len;
	__u32 prot;
	__u32 flags;
	__u32 fd;
	__u32 offset;
};

/* decode32 fills c from an i386 system call: args in bx, cx, dx, si, di, bp (32 bits each). */
static __always_inline bool decode32(long nr, struct pt_regs *regs, struct call *c, const bool direct)
{
	struct mmap_arg_struct32 a;

	switch (nr) {
	case NR32_OPEN:
		c->op = OP_OPEN;
		c->path = (__u32)REG(regs, bx);
		c->flags = REG(regs, cx);
		return true;
	case NR32_CREAT:
		c->op = OP_OPEN;
		c->path = (__u32)REG(regs, bx);
		c->flags = O_CREAT | O_WRONLY | O_TRUNC;
		return true;
	case NR32_OPENAT:
		c->op = OP_OPEN;
		c->path = (__u32)REG(regs, cx);
		c->flags = REG(regs, dx);
		return true;
	case NR32_OPENAT2:
		c->op = OP_OPEN;
		c->path = (__u32)REG(regs, cx);
		c->how = (__u32)REG(regs, dx);
		return true;
	case NR32_OPEN_BY_HANDLE_AT:
		c->op = OP_OPEN;
		c->flags = REG(regs, dx);
		return true;
	case NR32_MMAP2:
		c->op = OP_MMAP;
		c->flags = REG(regs, dx);
		c->map_flags = REG(regs, si);
		c->fd = (int)REG(regs, di);
		return true;
	case NR32_OLD_MMAP:
		if (bpf_probe_read_user(&a, sizeof(a), (void *)(unsigned long)(__u32)REG(regs, bx)))
			return false;
		c->op = OP_MMAP;
		c->flags = a.prot;
		c->map_flags = a.flags;
		c->fd = (int)a.fd;
		return true;
	}
	return false;
}

/* Turns a kernel address into a read-only BTF pointer (kernel 6.2+). */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* fd_key resolves fd in the current task: files->fdt->fd[fd]->f_inode. */
static __always_inline bool fd_key(struct task_struct *task, long fd, struct file_key *k, const bool direct)
{
	struct fdtable *fdt;
	struct file **fds;
	struct file *f = NULL;
	struct inode *inode;
	unsigned int max;

	if (fd < 0)
		return false;
	if (direct) {
		fdt = task->files->fdt;
		max = fdt->max_fds;
		fds = fdt->fd;
	} else {
		fdt = BPF_CORE_READ(task, files, fdt);
		max = BPF_CORE_READ(fdt, max_fds);
		fds = BPF_CORE_READ(fdt, fd);
	}
	if ((unsigned long)fd >= max)
		return false;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return false;
	if (direct) {
		/* Plain loads instead of probe reads. */
		f = bpf_rdonly_cast(f, bpf_core_type_id_kernel(struct file));
		inode = f->f_inode;
		if (!inode)
			return false;
		k->dev = inode->i_sb->s_dev;
		k->ino = inode->i_ino;
		return true;
	}
	inode = BPF_CORE_READ(f, f_inode);
	if (!inode)
		return false;
	k->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	k->ino = BPF_CORE_READ(inode, i_ino);
	return true;
}

/* emit sends one event; kpath, when set, is a PATH_KEY_LEN kernel copy of the path. */
static __always_inline void emit(const struct call *c, const struct file_key *k, long ret, const char *kpath)
{
	struct event *e;
	__u64 id, ugid, how_flags;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_LOST);
		return;
	}
	id = bpf_get_current_pid_tgid();
	ugid = bpf_get_current_uid_gid();
	e->boot_ns = bpf_ktime_get_boot_ns();
	e->dev = k->dev;
	e->ino = k->ino;
	e->result = ret;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->uid = (__u32)ugid;
	e->gid = ugid >> 32;
	e->flags = c->flags;
	e->map_flags = c->map_flags;
	e->op = c->op;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (c->how && !bpf_probe_read_user(&how_flags, sizeof(how_flags), (void *)c->how))
		e->flags = how_flags;
	e->path[0] = 0;
	if (kpath)
		__builtin_memcpy(e->path, kpath, PATH_KEY_LEN);
	else if (c->path)
		bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)c->path); /* zeroes on fault */
	bpf_ringbuf_submit(e, 0);
	count(COUNTER_EVENTS);
}

/* denied handles a refused open: there is no fd, so match the path argument. */
static __always_inline void denied(const struct call *c, long ret)
{
	struct path_key pk;
	struct file_key k, *v;

	__builtin_memset(&pk, 0, sizeof(pk));
	if (bpf_probe_read_user_str(pk.path, sizeof(pk.path), (void *)c->path) <= 0)
		return;
	v = bpf_map_lookup_elem(&watched_paths, &pk);
	if (!v)
		return;
	k = *v;
	emit(c, &k, ret, pk.path);
}

static __always_inline int handle(long nr, long ret, struct pt_regs *regs, const bool direct)
{
	struct task_struct *task;
	struct call c = {};
	struct file_key k;
	__u32 status;
	bool ok;

	nr &= ~X32_SYSCALL_BIT;
	if (!interesting(nr))
		return 0;

	if (direct) {
		task = bpf_get_current_task_btf();
		status = task->thread_info.status;
	} else {
		task = (struct task_struct *)bpf_get_current_task();
		status = BPF_CORE_READ(task, thread_info.status);
	}
	if (status & TS_COMPAT)
		ok = decode32(nr, regs, &c, direct);
	else
		ok = decode64(nr, regs, &c, direct);
	if (!ok)
		return 0;

	if (c.op == OP_MMAP) {
		/* Failed mmaps of a watched fd are reported too (e.g. PROT_WRITE refused). */
		if (c.map_flags & MAP_ANONYMOUS)
			return 0;
		if (fd_key(task, c.fd, &k, direct) && bpf_map_lookup_elem(&watched, &k))
			emit(&c, &k, ret, NULL);
		return 0;
	}
	if (ret >= 0) {
		if (fd_key(task, ret, &k, direct) && bpf_map_lookup_elem(&watched, &k))
			emit(&c, &k, ret, NULL);
		return 0;
	}
	if ((ret == -EACCES || ret == -EPERM) && c.path)
		denied(&c, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int on_exit_btf(__u64 *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];

	return handle(regs->orig_ax, (long)ctx[1], regs, true);
}

SEC("raw_tracepoint/sys_exit")
int on_exit_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];

	return handle(BPF_CORE_READ(regs, orig_ax), (long)ctx->args[1], regs, false);
}

SEC("tracepoint/raw_syscalls/sys_exit")
int on_exit_tp(struct trace_event_raw_sys_exit *ctx)
{
	long nr = ctx->id;
	struct pt_regs *regs;

	if (!interesting(nr & ~X32_SYSCALL_BIT))
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return handle(nr, ctx->ret, regs, false);
}
