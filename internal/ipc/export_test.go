package ipc

import "errors"

// errIOURingOff is why io_uring is off while a test turns it off.
var errIOURingOff = errors.New("ipc: io_uring turned off by a test")

// setIOURing turns SendBatch's use of io_uring on or off for a test.
func setIOURing(on bool) {
	if !on {
		uringFailed(errIOURingOff)
		return
	}
	rings.mu.Lock()
	defer rings.mu.Unlock()
	if rings.err == errIOURingOff {
		rings.err = nil
	}
}
