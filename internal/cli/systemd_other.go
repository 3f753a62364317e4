//go:build !linux

package cli

import "fmt"

// checkListenFD fails: inherited sockets are checked on Linux only.
func checkListenFD(fd int, name string) error {
	return fmt.Errorf("%w: fd %d: not supported on this system", errActivation, fd)
}
