//go:build race

package broker_test

// raceEnabled: the race detector's instrumentation inflates stacks and heap.
const raceEnabled = true
