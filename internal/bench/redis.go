package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

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
	rd      *bufio.Reader
	wbuf    []byte
	bulk    []byte // the last bulk string read
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
	c := &redisConn{r: r, nc: nc, rd: bufio.NewReaderSize(nc, 16<<10)}
	c.command([]byte("GET"), []byte(r.key))
	c.get = bytes.Clone(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return c, nil
}

// command appends a command in RESP's array-of-bulk-strings form.
func (c *redisConn) command(args ...[]byte) {
	c.wbuf = append(c.wbuf, '*')
	c.wbuf = strconv.AppendInt(c.wbuf, int64(len(args)), 10)
	c.wbuf = append(c.wbuf, "\r\n"...)
	for _, a := range args {
		c.wbuf = append(c.wbuf, '$')
		c.wbuf = strconv.AppendInt(c.wbuf, int64(len(a)), 10)
		c.wbuf = append(c.wbuf, "\r\n"...)
		c.wbuf = append(c.wbuf, a...)
		c.wbuf = append(c.wbuf, "\r\n"...)
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
// elements are read and the last returned.
func (c *redisConn) reply() ([]byte, error) {
	line, err := c.rd.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("bench: redis: malformed reply %q", line)
	}
	kind, rest := line[0], line[1:len(line)-2]
	switch kind {
	case '+', ':':
		return rest, nil
	case '-':
		return nil, fmt.Errorf("%w: %s", ErrRedis, rest)
	case '$', '*':
		n, err := strconv.Atoi(string(rest))
		if err != nil {
			return nil, fmt.Errorf("bench: redis: malformed length %q", rest)
		}
		if n < 0 {
			return nil, nil
		}
		if kind == '*' {
			var last []byte
			for range n {
				if last, err = c.reply(); err != nil {
					return nil, err
				}
			}
			return last, nil
		}
		if cap(c.bulk) < n+2 {
			c.bulk = make([]byte, n+2)
		}
		c.bulk = c.bulk[:n+2]
		if _, err := io.ReadFull(c.rd, c.bulk); err != nil {
			return nil, err
		}
		return c.bulk[:n], nil
	default:
		return nil, fmt.Errorf("bench: redis: unexpected reply type %q", kind)
	}
}

func (c *redisConn) Read(n int) error {
	for range n {
		c.wbuf = append(c.wbuf, c.get...)
	}
	_, err := c.roundTrip(n)
	return err
}

func (c *redisConn) Write(n int, value []byte) error {
	for range n {
		c.command([]byte("SET"), []byte(c.r.key), value)
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

type redisSubscriber struct{ *redisConn }

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
	return redisSubscriber{c}, nil
}

// Next reads the next message pushed to the subscriber.
func (s redisSubscriber) Next() error {
	_, err := s.reply()
	return err
}
