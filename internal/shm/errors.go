package shm

import "errors"

var (
	// ErrNotFound: no live variable has that name.
	ErrNotFound = errors.New("shm: variable not found")
	// ErrExists: a live variable already has that name.
	ErrExists = errors.New("shm: variable already exists")
	// ErrNoSpace: the directory is full or the file would pass its maximum size.
	ErrNoSpace = errors.New("shm: no space")
	// ErrTooLarge: the value can never fit in this file.
	ErrTooLarge = errors.New("shm: value too large")
	// ErrCorrupt: the file does not follow the layout.
	ErrCorrupt = errors.New("shm: corrupt service file")
	// ErrServiceDeleted: the broker deleted the service the file holds.
	ErrServiceDeleted = errors.New("shm: service deleted")
	// ErrServiceReplaced: the broker moved the service to a new file; ask it
	// for the file again.
	ErrServiceReplaced = errors.New("shm: service file replaced")
	// ErrBusy: a value kept changing under a reader for too long (or its
	// writer died in the middle of a change the broker has not yet repaired).
	ErrBusy = errors.New("shm: variable busy")
	// ErrClosed: the file or mapping was closed.
	ErrClosed = errors.New("shm: closed")
	// ErrReplaced: the Space the mapping is in mapped another file over it
	// during the read; read again through the Space's new Mapping.
	ErrReplaced = errors.New("shm: mapping replaced")
	// ErrInterrupted: Interrupt ended a Wait.
	ErrInterrupted = errors.New("shm: wait interrupted")
	// ErrInvalidName: a name does not fit the layout.
	ErrInvalidName = errors.New("shm: invalid name")
)
