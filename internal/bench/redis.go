package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"github.com/commy/commy/internal/ipc"
)

// Redis is a Redis server under test, reached on a Unix socket. It speaks
// just enough RESP2 for GET, SET, PUBLISH and SUBSCRIBE: a client library
// would add its own pooling and allocations to Redis's figures but not to
// commy's, which this package also drives by hand.
type Redis struct {
	socket       string
	key, channel string
	version      string
}

// DialRedis connects to the Redis server at socket and sets key to a value
// of valueSize bytes; Close deletes it. Notices go to a channel named after
// key.
func DialRedis(ctx context.Context, socket, key string, valueSize int) (*Redis, error) {
	r := &Redis{socket: socket, key: key, channel: key + ".notices"}
	c, err := r.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.command([]byte("INFO"), []byte("server"))
	info, err := c.roundTrip(1)
	if err != nil {
		return nil, fmt.Errorf("bench: redis: INFO: %w", err)
	}
	for line := range bytes.Lines(info) {
		if v, ok := bytes.CutPrefix(line, []byte("redis_version:")); ok {
			r.version = string(bytes.TrimSpace(v))
		}
	}
	if err := c.Write(1, make([]byte, valueSize)); err != nil {
		return nil, fmt.Errorf("bench: redis: SET: %w", err)
	}
	return r, nil
}

// Name implements System.
func (r *Redis) Name() string { return "redis" }

// Version implements System.
func (r *Redis) Version() string { return r.version }

// Close deletes the key.
func (r *Redis) Close() error {
	c, err := r.dial(context.Background())
	if err != nil {
		return err
	}
	defer c.Close()
	c.command([]byte("DEL"), []byte(r.key))
	_, err = c.roundTrip(1)
	return err
}

// ErrRedis is an error reply from Redis.
var ErrRedis = errors.New("bench: redis error reply")

type redisConn struct {
	r       *Redis
	nc      *ipc.Stream // the same system calls as a commy connection
	in      []byte      // received; in[rd:wr] not parsed yet
	rd, wr  int
	wbuf    []byte
	bulk    []byte // the last bulk string Parse took
	get     []byte // GET key, encoded once
	setHead []byte // SET key, without the value
}

func (r *Redis) dial(ctx context.Context) (*redisConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", r.socket)
	if err != nil {
		return nil, fmt.Errorf("bench: redis: %w", err)
	}
	nc, err := ipc.NewStream(conn.(*net.UnixConn))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("bench: redis: %w", err)
	}
	return newRedisConn(r, nc), nil
}

func newRedisConn(r *Redis, nc *ipc.Stream) *redisConn {
	c := &redisConn{r: r, nc: nc, in: make([]byte, 16<<10)}
	c.command([]byte("GET"), []byte(r.key))
	c.get = bytes.Clone(c.wbuf)
	c.wbuf = c.wbuf[:0]
	c.setHead = appendBulk(appendBulk([]byte("*3\r\n"), []byte("SET")), []byte(r.key))
	return c
}

// appendBulk appends a as a RESP bulk string.
func appendBulk(b, a []byte) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(a)), 10)
	b = append(b, "\r\n"...)
	b = append(b, a...)
	return append(b, "\r\n"...)
}

// command appends a command in RESP's array-of-bulk-strings form.
func (c *redisConn) command(args ...[]byte) {
	c.wbuf = append(c.wbuf, '*')
	c.wbuf = strconv.AppendInt(c.wbuf, int64(len(args)), 10)
	c.wbuf = append(c.wbuf, "\r\n"...)
	for _, a := range args {
		c.wbuf = appendBulk(c.wbuf, a)
	}
}

// roundTrip sends what was queued and reads n replies, returning the last
// one's payload (valid until the next read).
func (c *redisConn) roundTrip(n int) ([]byte, error) {
	_, err := c.nc.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	if err != nil {
		return nil, err
	}
	var last []byte
	for range n {
		if last, err = c.reply(); err != nil {
			return nil, err
		}
	}
	return last, nil
}

// reply reads one reply. A bulk string's payload is returned; an array's
// elements are read and the last returned. It is valid until the next read.
func (c *redisConn) reply() ([]byte, error) {
	for {
		n, last, err := respValue(c.in[c.rd:c.wr])
		if err != nil {
			return nil, err
		}
		if n > 0 {
			c.rd += n
			return last, nil
		}
		if c.rd > 0 { // make room at the end
			c.wr = copy(c.in, c.in[c.rd:c.wr])
			c.rd = 0
		}
		if c.wr == len(c.in) {
			c.in = append(c.in, make([]byte, len(c.in))...)
		}
		m, err := c.nc.Read(c.in[c.wr:])
		if err != nil {
			return nil, err
		}
		c.wr += m
	}
}

// respValue parses the RESP2 value at the start of b: it returns its
// length, or 0 if b holds only part of it, and its payload: a simple
// string's or an integer's text, a bulk string's bytes, an array's last
// element's.
func respValue(b []byte) (n int, last []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return 0, nil, nil
	}
	if i < 2 || b[i-1] != '\r' {
		return 0, nil, fmt.Errorf("bench: redis: malformed reply %q", b[:i+1])
	}
	kind, rest := b[0], b[1:i-1]
	n = i + 1
	switch kind {
	case '+', ':':
		return n, rest, nil
	case '-':
		return 0, nil, fmt.Errorf("%w: %s", ErrRedis, rest)
	case '$', '*':
		k, err := strconv.Atoi(string(rest))
		if err != nil {
			return 0, nil, fmt.Errorf("bench: redis: malformed length %q", rest)
		}
		if k < 0 {
			return n, nil, nil
		}
		if kind == '$' {
			if len(b) < n+k+2 {
				return 0, nil, nil
			}
			return n + k + 2, b[n : n+k], nil
		}
		for range k {
			m, v, err := respValue(b[n:])
			if m == 0 || err != nil {
				return 0, nil, err
			}
			n, last = n+m, v
		}
		return n, last, nil
	default:
		return 0, nil, fmt.Errorf("bench: redis: unexpected reply type %q", kind)
	}
}

func (c *redisConn) Reads(n int) ([]byte, error) {
	c.wbuf = c.wbuf[:0]
	for range n {
		c.wbuf = append(c.wbuf, c.get...)
	}
	return c.wbuf, nil
}

func (c *redisConn) Writes(n int, value []byte) ([]byte, error) {
	c.wbuf = c.wbuf[:0]
	for range n {
		c.wbuf = appendBulk(append(c.wbuf, c.setHead...), value)
	}
	return c.wbuf, nil
}

func (c *redisConn) Read(n int) error {
	if _, err := c.Reads(n); err != nil {
		return err
	}
	_, err := c.roundTrip(n)
	return err
}

func (c *redisConn) Write(n int, value []byte) error {
	if _, err := c.Writes(n, value); err != nil {
		return err
	}
	_, err := c.roundTrip(n)
	return err
}

func (c *redisConn) Publish(value []byte) error {
	c.command([]byte("PUBLISH"), []byte(c.r.channel), value)
	_, err := c.roundTrip(1)
	return err
}

func (c *redisConn) Close() error { return c.nc.Close() }

// Conn implements System.
func (r *Redis) Conn() (Conn, error) { return r.dial(context.Background()) }

// Subscriber implements System.
func (r *Redis) Subscriber() (Subscriber, error) {
	c, err := r.dial(context.Background())
	if err != nil {
		return nil, err
	}
	c.command([]byte("SUBSCRIBE"), []byte(r.channel))
	if _, err := c.roundTrip(1); err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: redis: SUBSCRIBE: %w", err)
	}
	if c.rd != c.wr {
		c.Close()
		return nil, errors.New("bench: redis: a message came with the reply to SUBSCRIBE")
	}
	return c, nil
}

func (c *redisConn) SyscallConn() (syscall.RawConn, error) { return c.nc.SyscallConn() }

// Parse parses every whole reply, or message pushed to a subscriber, in b,
// copying each payload as a client would.
func (c *redisConn) Parse(b []byte) (used, replies int, err error) {
	for {
		n, last, err := respValue(b[used:])
		if n == 0 || err != nil {
			return used, replies, err
		}
		c.bulk = append(c.bulk[:0], last...)
		used += n
		replies++
	}
}
