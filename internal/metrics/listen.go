package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/commy/commy/internal/paths"
)

var (
	// ErrAddress: the listen address cannot be parsed.
	ErrAddress = errors.New("metrics: bad listen address")
	// ErrNotLoopback: a TCP address reaches beyond this host and remote
	// listening was not allowed.
	ErrNotLoopback = errors.New("metrics: listen address is not loopback")
	// ErrInUse: another process serves the Unix socket.
	ErrInUse = errors.New("metrics: socket in use")
)

// unixPrefix marks a Unix socket path in a listen address.
const unixPrefix = "unix:"

// DefaultSocketMode is the mode of a metrics Unix socket: the broker's user
// and group may scrape it.
const DefaultSocketMode os.FileMode = 0o660

// ParseAddress splits a listen address into a network ("unix" or "tcp") and
// an address: "unix:PATH" is a Unix socket, anything else a TCP host:port.
// It checks the form only; Listen checks where a TCP address leads.
func ParseAddress(addr string) (network, address string, err error) {
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		if path == "" {
			return "", "", fmt.Errorf("%w: %q: no socket path", ErrAddress, addr)
		}
		return "unix", path, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("%w: %q: want HOST:PORT or unix:PATH: %w", ErrAddress, addr, err)
	}
	return "tcp", addr, nil
}

// ListenConfig says where a metrics listener may listen. The zero value
// accepts Unix sockets and loopback TCP addresses only.
type ListenConfig struct {
	// AllowRemote accepts TCP addresses that are not loopback, such as
	// ":9090" (every interface).
	AllowRemote bool
	// SocketMode is the mode of a Unix socket; zero means DefaultSocketMode.
	SocketMode os.FileMode
}

// Listen opens a listener on addr (see ParseAddress). Unless AllowRemote
// is set, a TCP address must be a loopback address or a name that resolves
// to loopback addresses only ("localhost"), and the listener is bound to the
// address that was checked; an empty host (every interface) is refused.
// A Unix socket left behind by a process that died is replaced; the file is
// removed when the listener is closed.
func (lc ListenConfig) Listen(ctx context.Context, addr string) (net.Listener, error) {
	network, address, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		return lc.listenUnix(address)
	}
	if !lc.AllowRemote {
		if address, err = loopback(ctx, address); err != nil {
			return nil, err
		}
	}
	var nlc net.ListenConfig
	l, err := nlc.Listen(ctx, "tcp", address)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen: %w", err)
	}
	return l, nil
}

// loopback resolves the host of a TCP address and checks that every
// address it names is loopback. It returns the address to bind: the
// first IPv4 address found, else the first one.
func loopback(ctx context.Context, hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrAddress, hostport, err)
	}
	if host == "" {
		return "", fmt.Errorf("%w: %q listens on every interface", ErrNotLoopback, hostport)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
		return "", fmt.Errorf("metrics: resolve %q: %w", host, err)
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("metrics: resolve %q: no addresses", host)
	}
	bind := ips[0]
	for _, ip := range ips {
		ip = ip.Unmap()
		if !ip.IsLoopback() {
			return "", fmt.Errorf("%w: %q is %s", ErrNotLoopback, host, ip)
		}
		if ip.Is4() && !bind.Unmap().Is4() {
			bind = ip
		}
	}
	return net.JoinHostPort(bind.Unmap().String(), port), nil
}

// listenUnix creates the Unix socket at path, replacing a stale one.
func (lc ListenConfig) listenUnix(path string) (net.Listener, error) {
	mode := lc.SocketMode
	if mode == 0 {
		mode = DefaultSocketMode
	}
	if err := paths.MakeDir(filepath.Dir(path), 0o755, os.Geteuid()); err != nil {
		return nil, fmt.Errorf("metrics: socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("metrics: %s exists and is not a socket", path)
		}
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s", ErrInUse, path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("metrics: probe %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("metrics: remove stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("metrics: listen: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("metrics: socket mode: %w", err)
	}
	return l, nil
}
