//go:build !linux

package shm

import (
	"sync/atomic"
	"time"
)

func futexWake(*atomic.Uint32) int { return 0 }

func futexWait(_ *atomic.Uint32, _ uint32, d time.Duration) { time.Sleep(min(d, time.Millisecond)) }
