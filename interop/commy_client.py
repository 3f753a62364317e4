#!/usr/bin/python3
"""A commy client written from docs/protocol.md and docs/shm-layout.md alone.

Usage: commy_client.py SOCKET
Runs a scripted session against a broker and exits 0 when everything the docs
promise holds; prints what failed otherwise.
"""
import array
import mmap
import os
import socket
import struct
import sys

import cbor2


class Conn:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.fds = []
        self.next_id = 0

    def _recv(self):
        fds = array.array("i")
        data, anc, flags, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(4 * fds.itemsize))
        if flags & socket.MSG_CTRUNC:
            raise RuntimeError("descriptors truncated")
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
        self.fds.extend(fds)
        if not data:
            raise EOFError("broker closed the connection")
        self.buf += data

    def read(self):
        while len(self.buf) < 4:
            self._recv()
        (n,) = struct.unpack(">I", self.buf[:4])
        while len(self.buf) < 4 + n:
            self._recv()
        body, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
        msg = cbor2.loads(body)
        fd = self.fds.pop(0) if msg.get("type") == "ServiceFilePath" else None
        return msg, fd

    def send(self, msg_type, **fields):
        self.next_id += 1
        msg = {"type": msg_type, "id": self.next_id, **fields}
        body = cbor2.dumps(msg)
        self.sock.sendall(struct.pack(">I", len(body)) + body)
        return self.next_id

    def call(self, msg_type, **fields):
        rid = self.send(msg_type, **fields)
        while True:
            msg, fd = self.read()
            if msg["id"] == rid:
                return msg, fd
            if msg["id"] != 0:
                raise RuntimeError("reply for id %d while waiting for %d" % (msg["id"], rid))


def read_mapped(mem, name):
    """Reads a variable from a mapping per docs/shm-layout.md."""
    u32 = lambda off: struct.unpack_from("<I", mem, off)[0]
    u64 = lambda off: struct.unpack_from("<Q", mem, off)[0]
    assert mem[0:8] == b"COMMYSHM", "magic"
    assert u32(0x08) == 1, "layout version"
    dir_off, count = u32(0x30), u32(0x3C)
    for i in range(count):
        e = dir_off + 256 * i
        while True:
            s1 = u64(e)
            if s1 & 1:
                continue
            state = u64(e + 0x08)
            nlen = struct.unpack_from("<H", mem, e + 0x30)[0]
            ename = bytes(mem[e + 0x40 : e + 0x40 + nlen]).decode()
            value = version = None
            if state & 1 and ename == name:
                a = (state >> 1) & 1
                off, cap = u64(e + 0x10 + 16 * a), u64(e + 0x18 + 16 * a)
                assert off + 64 + cap <= u64(0x18), "slot inside file_size"
                size, version = u64(off), u64(off + 8)
                assert size <= cap
                value = bytes(mem[off + 64 : off + 64 + size])
            if u64(e) == s1:
                break
        if value is not None:
            return value, version
    return None, None


def main():
    path = sys.argv[1]
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    a = Conn(path)
    w, _ = a.call("Hello", protocol=1, client_name="python")
    check(w["type"] == "Welcome" and w["protocol"] == 1, "welcome: %r" % w)
    check(w["pid"] == os.getpid() and w["uid"] == os.getuid(), "kernel identity: %r" % w)

    r, _ = a.call("CreateTenant", tenant_id="py")
    check(r["type"] == "Tenant", "CreateTenant: %r" % r)
    r, _ = a.call("CreateService", tenant_id="py", service_name="svc")
    check(r["type"] == "Service" and r["service_id"] == "py_svc", "CreateService: %r" % r)
    r, _ = a.call("AllocateVariable", service_id="py_svc", variable_name="greeting", initial_data=b"hello")
    check(r["type"] == "VariableData" and r["version"] == 1 and r["data"] == b"hello", "Allocate: %r" % r)
    r, _ = a.call("WriteVariable", service_id="py_svc", variable_name="greeting", data=b"hello from python" * 10)
    check(r["type"] == "VariableWritten" and r["version"] == 2, "Write: %r" % r)
    r, _ = a.call("ReadVariable", service_id="py_svc", variable_name="nope")
    check(r["type"] == "Error" and r["error_code"] == "VARIABLE_NOT_FOUND", "missing variable: %r" % r)
    r, _ = a.call("CreateTenant", tenant_id="bad_name")
    check(r.get("error_code") == "INVALID_NAME", "bad tenant name: %r" % r)

    r, fd = a.call("GetServiceFilePath", tenant_id="py", service_name="svc")
    check(r["type"] == "ServiceFilePath" and fd is not None, "file path: %r fd %r" % (r, fd))
    if fd is not None:
        check(os.fstat(fd).st_size == r["file_size"], "file_size matches")
        check(os.path.isabs(r["file_path"]) and os.path.exists(r["file_path"]), "file_path exists")
        # Python's mmap refuses to map past the end of the file, so map what
        # exists now (the docs' fallback) instead of max_size.
        mem = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)
        value, version = read_mapped(mem, "greeting")
        check(value == b"hello from python" * 10 and version == 2, "mapped read: %r v%r" % (value, version))
        try:
            mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            failures.append("descriptor mapped writable")
        except (PermissionError, OSError):
            pass
        mem.close()
        os.close(fd)

    # A second connection subscribes; a change by the first reaches it.
    b = Conn(path)
    b.call("Hello", protocol=1)
    r, _ = b.call("Subscribe", service_id="py_svc")
    check(r["type"] == "Subscribed", "Subscribe: %r" % r)
    r, _ = a.call("ReportVariableChanges", service_id="py_svc", changed_variables=["greeting"],
                  new_values=[["greeting", b"reported"]])
    check(r["type"] == "VariableChangesAcknowledged" and r["changed_variables"] == ["greeting"], "Report: %r" % r)
    push, _ = b.read()
    check(push["type"] == "VariablesUpdated" and push["id"] == 0 and push["variables"] == ["greeting"]
          and push["versions"] == [3], "push: %r" % push)

    # A frame over the limit is refused and the connection closed.
    c = Conn(path)
    c.sock.sendall(struct.pack(">I", 0xFFFFFFFF))
    r, _ = c.read()
    check(r.get("error_code") == "FRAME_TOO_LARGE", "huge frame: %r" % r)

    if failures:
        print("\n".join(failures))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
