//go:build !linux

package shm

import (
	"errors"
	"os"
)

// ErrNotSupported: service files need Linux.
var ErrNotSupported = errors.New("shm: not supported on this platform")

func mapShared(*os.File, int, bool) ([]byte, error) { return nil, ErrNotSupported }
func unmap([]byte) error                            { return ErrNotSupported }
func reserveZero(int) ([]byte, error)               { return nil, ErrNotSupported }
func mapFixed(*os.File, []byte) error               { return ErrNotSupported }
func reserve(*os.File, uint64, uint64) error        { return ErrNotSupported }
func memfdCreate(string) (*os.File, error)          { return nil, ErrNotSupported }
func sealMemfd(*os.File) error                      { return ErrNotSupported }
func checkMemfd(*os.File) error                     { return ErrNotSupported }

func cannotShrink(*os.File) bool { return false }
