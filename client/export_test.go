package client

import "time"

// SetWaitSlice sets the poll slice of m's current shared-memory mapping (see
// shm.Mapping.SetWaitSlice), so that a test proves the futex wake.
func SetWaitSlice(m *Mapping, d time.Duration) {
	if sm := m.cur.Load(); sm != nil {
		sm.SetWaitSlice(d)
	}
}
