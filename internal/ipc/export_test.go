package ipc

// setIOURing turns SendBatch's use of io_uring on or off for a test.
func setIOURing(on bool) {
	if !on {
		DisableIOURing()
		return
	}
	rings.mu.Lock()
	defer rings.mu.Unlock()
	if rings.err == ErrIOURingOff {
		rings.err = nil
	}
}
