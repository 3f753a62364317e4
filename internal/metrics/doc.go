// Package metrics serves the broker's Prometheus metrics and, optionally,
// pprof over HTTP, on a loopback TCP address or a Unix socket.
//
// Importing net/http/pprof registers its handlers on http.DefaultServeMux as
// a side effect; this package never serves that mux, only its own.
package metrics
