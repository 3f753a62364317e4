// Package bench is the load generator behind `commy bench`: it drives a
// running commy broker, and optionally a Redis server, through the same
// scenarios over Unix sockets and reports latency percentiles and
// throughput. It speaks both wire protocols itself, synchronously on the
// calling goroutine, so both systems are measured the same way.
package bench
