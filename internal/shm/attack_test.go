package shm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/commy/commy/internal/testutil"
	"golang.org/x/sys/unix"
)

// attackResult is what the attacking child reports.
type attackResult struct {
	Uid                                       int
	Reopen, MmapWrite, Ftruncate, Write, Read string
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// attackChild runs as another uid with a read-only service descriptor as fd 3
// and tries to turn it into a writable one.
func attackChild() int {
	const fd = 3
	res := attackResult{Uid: os.Getuid()}
	if w, err := os.OpenFile("/proc/self/fd/3", os.O_RDWR, 0); err != nil {
		res.Reopen = errText(err)
	} else {
		w.Close()
	}
	if mem, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		res.MmapWrite = errText(err)
	} else {
		mem[0] = 'X'
		unix.Munmap(mem)
	}
	res.Ftruncate = errText(unix.Ftruncate(fd, 0))
	_, err := unix.Pwrite(fd, []byte("X"), 0)
	res.Write = errText(err)
	mem, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
	if err == nil {
		unix.Munmap(mem)
	}
	res.Read = errText(err)
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// TestReadOnlyDescriptorAttack passes a read-only descriptor to a child running
// as uid 65534 and checks it cannot reopen it for writing, map it writable,
// truncate it or write to it, and the data is unchanged.
func TestReadOnlyDescriptorAttack(t *testing.T) {
	testutil.RequireRoot(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			f := be.create(t, Options{})
			if _, err := f.Allocate("secret", []byte("unchanged"), 0); err != nil {
				t.Fatal(err)
			}
			before := append([]byte(nil), f.mem[:f.size]...)
			ro, err := f.OpenReadOnly()
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			cmd := testutil.Child(t, "attack", testutil.Nobody, testutil.Nobody)
			cmd.ExtraFiles = []*os.File{ro}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v", err)
			}
			var res attackResult
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("child said %q: %v", out, err)
			}
			if res.Uid != testutil.Nobody {
				t.Fatalf("child ran as uid %d", res.Uid)
			}
			for what, e := range map[string]string{"reopen O_RDWR": res.Reopen, "mmap PROT_WRITE": res.MmapWrite, "ftruncate": res.Ftruncate, "pwrite": res.Write} {
				if e == "" {
					t.Errorf("%s succeeded", what)
				}
			}
			if res.Read != "" {
				t.Errorf("read-only mmap failed: %s", res.Read)
			}
			if got, _ := mustRead(t, f, "secret"); string(got) != "unchanged" {
				t.Fatalf("secret = %q", got)
			}
			if !bytes.Equal(before, f.mem[:f.size]) {
				t.Fatal("file bytes changed")
			}
			if fi, _ := f.Stat(); fi.Size() != f.Size() {
				t.Fatalf("size %d, want %d", fi.Size(), f.Size())
			}
			t.Log(fmt.Sprintf("%+v", res))
		})
	}
}
