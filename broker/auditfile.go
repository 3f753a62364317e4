package broker

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// Audit log rotation defaults.
const (
	DefaultAuditMaxSize = 64 << 20
	DefaultAuditKeep    = 4
)

// auditFile is the audit log's file: it rotates when a write would pass
// maxSize (path -> path.1 -> ... -> path.<keep>, the oldest removed) and
// reopens path after Reopen, for logrotate. Write is called by the audit
// writer goroutine; Reopen may be called from any goroutine.
type auditFile struct {
	path    string
	maxSize int64 // 0: no limit
	keep    int   // rotated files kept

	mu     sync.Mutex
	f      *os.File
	size   int64
	reopen bool
}

// openAuditFile opens the audit log at path for appending.
func openAuditFile(path string, maxSize int64, keep int) (*auditFile, error) {
	a := &auditFile{path: path, maxSize: maxSize, keep: keep}
	if err := a.openLocked(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *auditFile) openLocked() error {
	f, err := openAppend(a.path)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	a.f, a.size, a.reopen = f, fi.Size(), false
	return nil
}

// Reopen makes the next write reopen the file at path: logrotate moved it.
func (a *auditFile) Reopen() {
	a.mu.Lock()
	a.reopen = true
	a.mu.Unlock()
}

// Write appends p, rotating first when p would take the file past maxSize.
// A batch larger than maxSize goes into a file of its own.
func (a *auditFile) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reopen || a.f == nil {
		if a.f != nil {
			a.f.Close()
			a.f = nil
		}
		if err := a.openLocked(); err != nil {
			return 0, fmt.Errorf("broker: reopen audit log: %w", err)
		}
	}
	if a.maxSize > 0 && a.size > 0 && a.size+int64(len(p)) > a.maxSize {
		if err := a.rotateLocked(); err != nil {
			return 0, err
		}
	}
	n, err := a.f.Write(p)
	if err != nil && n > 0 {
		// Never leave half a record (a full disk): readers stop at it.
		if a.f.Truncate(a.size) == nil {
			n = 0
		}
	}
	a.size += int64(n)
	return n, err
}

// rotateLocked shifts the rotated files up by one and starts a new file.
func (a *auditFile) rotateLocked() error {
	a.f.Close()
	a.f = nil
	var errs []error
	if a.keep <= 0 {
		errs = append(errs, os.Remove(a.path))
	} else {
		os.Remove(fmt.Sprintf("%s.%d", a.path, a.keep))
		for i := a.keep - 1; i >= 1; i-- {
			if err := os.Rename(fmt.Sprintf("%s.%d", a.path, i), fmt.Sprintf("%s.%d", a.path, i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		errs = append(errs, os.Rename(a.path, a.path+".1"))
	}
	if err := a.openLocked(); err != nil {
		return fmt.Errorf("broker: rotate audit log: %w", errors.Join(append(errs, err)...))
	}
	return nil
}

// Close closes the file. It is safe to call more than once.
func (a *auditFile) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}
