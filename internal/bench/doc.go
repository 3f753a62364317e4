// Package bench is the load generator behind `commy bench`: it drives a
// running commy broker, and optionally a Redis server, through the same
// scenarios over Unix sockets and reports latency percentiles and
// throughput. It speaks both wire protocols itself and, the way
// redis-benchmark does, drives a measurement's read and write clients, or
// its subscribers, from one event loop, so that both systems are measured
// the same way and the generator spends little CPU.
package bench
