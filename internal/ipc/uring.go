package ipc

import (
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An io_uring instance used for two things: many sends of a few hundred
// bytes each to different sockets, and many reads from different sockets,
// submitted and completed in one system call. On this project's machines a
// sendto(2) costs as much in entering and leaving the kernel as in sending,
// so a fan-out to a thousand subscribers spends half its time on the way in
// and out. The layouts below are the kernel's (include/uapi/linux/io_uring.h).

const (
	uringOpRecvmsg        = 10     // IORING_OP_RECVMSG, Linux 5.3
	uringOpSend           = 26     // IORING_OP_SEND, Linux 5.6
	uringEnterGetEvents   = 1 << 0 // IORING_ENTER_GETEVENTS
	uringSetupSubmitAll   = 1 << 7 // IORING_SETUP_SUBMIT_ALL: an SQE that fails does not stop the rest
	uringSetupCoopTaskrun = 1 << 8 // IORING_SETUP_COOP_TASKRUN: no interrupt to run completions
	uringOffSQRing        = 0
	uringOffCQRing        = 0x8000000
	uringOffSQEs          = 0x10000000
)

type uringSQE struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	msgFlags    uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	_           uint64
}

type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

type uringSQOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type uringCQOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sq                                                                     uringSQOffsets
	cq                                                                     uringCQOffsets
}

// ring is an io_uring instance; one goroutine uses it at a time.
type ring struct {
	fd             int
	mem            [][]byte // the mappings, for close
	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        []uint32
	sqes           []uringSQE
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []uringCQE
}

// errRingBroken: the kernel refused io_uring_enter in a way that leaves the
// state of submitted sends unknown; the ring is not used again.
var errRingBroken = errors.New("ipc: io_uring instance failed")

// newRing sets up an instance of entries submission slots.
func newRing(entries uint32) (*ring, error) {
	var p uringParams
	p.flags = uringSetupSubmitAll | uringSetupCoopTaskrun
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno == unix.EINVAL { // a kernel before 5.19 knows neither flag
		p = uringParams{}
		fd, _, errno = unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	}
	if errno != 0 {
		return nil, os.NewSyscallError("io_uring_setup", errno)
	}
	unix.CloseOnExec(int(fd))
	r := &ring{fd: int(fd)}
	mmap := func(off int64, size int) ([]byte, error) {
		b, err := unix.Mmap(r.fd, off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, os.NewSyscallError("mmap", err)
		}
		r.mem = append(r.mem, b)
		return b, nil
	}
	sq, err := mmap(uringOffSQRing, int(p.sq.array+p.sqEntries*4))
	if err == nil {
		var cq, sqes []byte
		if cq, err = mmap(uringOffCQRing, int(p.cq.cqes+p.cqEntries*uint32(unsafe.Sizeof(uringCQE{})))); err == nil {
			if sqes, err = mmap(uringOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(uringSQE{}))); err == nil {
				r.sqHead = (*uint32)(unsafe.Pointer(&sq[p.sq.head]))
				r.sqTail = (*uint32)(unsafe.Pointer(&sq[p.sq.tail]))
				r.sqMask = *(*uint32)(unsafe.Pointer(&sq[p.sq.ringMask]))
				r.sqArray = unsafe.Slice((*uint32)(unsafe.Pointer(&sq[p.sq.array])), p.sqEntries)
				r.sqes = unsafe.Slice((*uringSQE)(unsafe.Pointer(&sqes[0])), p.sqEntries)
				r.cqHead = (*uint32)(unsafe.Pointer(&cq[p.cq.head]))
				r.cqTail = (*uint32)(unsafe.Pointer(&cq[p.cq.tail]))
				r.cqMask = *(*uint32)(unsafe.Pointer(&cq[p.cq.ringMask]))
				r.cqes = unsafe.Slice((*uringCQE)(unsafe.Pointer(&cq[p.cq.cqes])), p.cqEntries)
			}
		}
	}
	if err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *ring) close() {
	for _, b := range r.mem {
		unix.Munmap(b)
	}
	r.mem = nil
	unix.Close(r.fd)
}

// sendAll sends bufs[i] to fds[i] without waiting for room (MSG_DONTWAIT,
// so a full socket completes at once with EAGAIN) and stores what each send
// returned in res: bytes sent, or a negative errno. At most the entries
// the ring was made with at a time. The buffers must stay alive and
// unchanged, and the descriptors open, until it returns.
func (r *ring) sendAll(fds []int, bufs [][]byte, res []int32) error {
	tail := atomic.LoadUint32(r.sqTail)
	for i := range fds {
		r.put(tail, i, uringSQE{
			opcode: uringOpSend, fd: int32(fds[i]),
			addr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(bufs[i])))), len: uint32(len(bufs[i])),
			msgFlags: unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL,
		})
	}
	err := r.run(tail, len(fds), res)
	runtime.KeepAlive(bufs)
	return err
}

// recvmsgAll makes recvmsg(2) of fds[i] into msgs[i] without waiting
// (MSG_DONTWAIT, so an empty socket completes at once with EAGAIN), with
// MSG_CMSG_CLOEXEC, and stores what each returned in res, as sendAll. The
// kernel updates each msghdr's control length and flags as recvmsg does.
func (r *ring) recvmsgAll(fds []int, msgs []*unix.Msghdr, res []int32) error {
	tail := atomic.LoadUint32(r.sqTail)
	for i := range fds {
		r.put(tail, i, uringSQE{
			opcode: uringOpRecvmsg, fd: int32(fds[i]),
			addr: uint64(uintptr(unsafe.Pointer(msgs[i]))), len: 1,
			msgFlags: unix.MSG_DONTWAIT | unix.MSG_CMSG_CLOEXEC,
		})
	}
	err := r.run(tail, len(fds), res)
	runtime.KeepAlive(msgs)
	return err
}

// put writes sqe as the i-th entry after tail, its user data i.
func (r *ring) put(tail uint32, i int, sqe uringSQE) {
	idx := (tail + uint32(i)) & r.sqMask
	sqe.userData = uint64(i)
	r.sqes[idx] = sqe
	r.sqArray[idx] = idx
}

// run submits the n entries written from tail and waits for their
// completions, storing each result in res by its user data; an entry left
// without one (the ring failed) stays -EINPROGRESS.
func (r *ring) run(tail uint32, n int, res []int32) error {
	for i := range res[:n] {
		res[i] = -int32(unix.EINPROGRESS)
	}
	atomic.StoreUint32(r.sqTail, tail+uint32(n)) // release: the kernel sees the entries
	done := 0
	for tries := 0; done < n; tries++ {
		pending := int(atomic.LoadUint32(r.sqTail) - atomic.LoadUint32(r.sqHead))
		_, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(pending), uintptr(n-done), uringEnterGetEvents, 0, 0)
		head := atomic.LoadUint32(r.cqHead)
		for ; head != atomic.LoadUint32(r.cqTail); head++ {
			c := r.cqes[head&r.cqMask]
			if c.userData < uint64(len(res)) {
				res[c.userData] = c.res
				done++
			}
		}
		atomic.StoreUint32(r.cqHead, head)
		switch errno {
		case 0, unix.EINTR, unix.EAGAIN, unix.EBUSY:
		default:
			if done < n {
				return errRingBroken
			}
		}
		if tries > 1000 && done < n {
			return errRingBroken
		}
	}
	return nil
}
