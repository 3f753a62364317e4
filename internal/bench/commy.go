package bench

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/commy/commy/client"
	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
)

// Variable is the name of the variable the benchmark reads and writes.
const Variable = "bench"

// Commy is a commy broker under test. It holds one service with one
// variable, made by DialCommy.
type Commy struct {
	cl              *client.Client
	socket          string
	tenant, service string
	serviceID       string
	version         string
	dropTenant      bool
}

// NewCommy prepares the broker that cl is connected to, at socket, for a
// run: tenant/service with a variable of valueSize bytes. The tenant is made
// when missing and then deleted by Close, through cl, which must stay open
// until then.
func NewCommy(ctx context.Context, cl *client.Client, socket, tenant, service string, valueSize int) (*Commy, error) {
	c := &Commy{cl: cl, socket: socket, tenant: tenant, service: service, version: cl.Welcome().ServerVersion}
	switch err := cl.CreateTenant(ctx, tenant); {
	case err == nil:
		c.dropTenant = true
	case !errors.Is(err, client.ErrAlreadyExists):
		return nil, fmt.Errorf("bench: commy: create tenant %s: %w", tenant, err)
	}
	svc, err := cl.CreateService(ctx, tenant, service)
	if errors.Is(err, client.ErrAlreadyExists) {
		svc, err = cl.Service(ctx, tenant, service)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: commy: service %s/%s: %w", tenant, service, err)
	}
	c.serviceID = svc.ID
	value := make([]byte, valueSize)
	if _, err := svc.Allocate(ctx, Variable, value, valueSize); errors.Is(err, client.ErrAlreadyExists) {
		_, err = svc.Write(ctx, Variable, value)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: commy: variable %s: %w", Variable, err)
	}
	return c, nil
}

// Name implements System.
func (c *Commy) Name() string { return "commy" }

// Version implements System.
func (c *Commy) Version() string { return c.version }

// Close deletes the tenant when NewCommy made it.
func (c *Commy) Close() error {
	if !c.dropTenant {
		return nil
	}
	c.dropTenant = false
	if err := c.cl.DeleteTenant(context.Background(), c.tenant); err != nil {
		return fmt.Errorf("bench: commy: delete tenant %s: %w", c.tenant, err)
	}
	return nil
}

// commyConn speaks the protocol synchronously: a batch of requests, then
// their replies.
type commyConn struct {
	c    *ipc.Conn
	enc  ipc.Encoder
	buf  []byte
	next uint64
}

func (c *Commy) dial() (*commyConn, error) {
	ic, err := ipc.Dial(c.socket, 0)
	if err != nil {
		return nil, err
	}
	cc := &commyConn{c: ic}
	if _, err := cc.call(&ipc.Hello{Protocol: ipc.ProtocolVersion, ClientName: "commy-bench"}); err != nil {
		ic.Close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	return cc, nil
}

// queue appends m's frame, with a fresh id, to the batch.
func (cc *commyConn) queue(m ipc.Message) error {
	cc.next++
	m.Hdr().ID = cc.next
	f, err := cc.enc.Frame(m)
	if err != nil {
		return err
	}
	cc.buf = append(cc.buf, f...)
	return nil
}

// roundTrip sends the batch and reads n replies, returning the last; an
// Error reply comes back as the error. With into, each reply is decoded
// into it, reused as the Redis side reuses its buffers, and must be of its
// type.
func (cc *commyConn) roundTrip(n int, into ipc.Message) (ipc.Message, error) {
	err := cc.c.WriteFrame(cc.buf, nil)
	cc.buf = cc.buf[:0]
	if err != nil {
		return nil, err
	}
	var last ipc.Message
	for range n {
		body, err := cc.c.ReadFrame()
		if err != nil {
			return nil, err
		}
		if into != nil {
			if err := decodeReply(body, into); err != nil {
				return nil, err
			}
			last = into
			continue
		}
		m, _, err := ipc.Decode(body)
		if err != nil {
			return nil, err
		}
		if e, ok := m.(*ipc.Error); ok {
			return nil, &ipc.RemoteError{Code: e.ErrorCode, Message: e.Message}
		}
		last = m
	}
	return last, nil
}

// decodeReply decodes body into into; an Error reply comes back as the
// error, and any other kind as an error naming it.
func decodeReply(body []byte, into ipc.Message) error {
	if ipc.DecodeInto(body, into) == nil {
		return nil
	}
	m, _, err := ipc.Decode(body)
	if err != nil {
		return fmt.Errorf("bench: commy: %w", err)
	}
	if e, ok := m.(*ipc.Error); ok {
		return &ipc.RemoteError{Code: e.ErrorCode, Message: e.Message}
	}
	return fmt.Errorf("bench: commy: %s where %s was due", m.Kind(), into.Kind())
}

// frames calls take with the body of each whole frame at the start of b,
// until it fails, and says how many bytes and frames it took.
func frames(b []byte, take func(body []byte) error) (used, n int, err error) {
	for {
		body, size := ipc.SplitFrame(b[used:])
		if size == 0 {
			return used, n, nil
		}
		if err := take(body); err != nil {
			return used, n, err
		}
		used += size
		n++
	}
}

func (cc *commyConn) call(m ipc.Message) (ipc.Message, error) {
	if err := cc.queue(m); err != nil {
		return nil, err
	}
	return cc.roundTrip(1, nil)
}

func (cc *commyConn) Close() error {
	cc.c.ReleaseFDs()
	return cc.c.Close()
}

func (cc *commyConn) SyscallConn() (syscall.RawConn, error) {
	return cc.c.UnixConn().SyscallConn()
}

type commyClient struct {
	*commyConn
	read    ipc.ReadVariable
	write   ipc.WriteVariable
	data    ipc.VariableData    // read's replies
	written ipc.VariableWritten // write's replies
	due     ipc.Message         // what Parse decodes into: data or written
	replied uint64              // the id of the last reply Parse took
}

// Conn implements System.
func (c *Commy) Conn() (Conn, error) {
	cc, err := c.dial()
	if err != nil {
		return nil, err
	}
	return newCommyClient(cc, c.serviceID), nil
}

func newCommyClient(cc *commyConn, serviceID string) *commyClient {
	return &commyClient{
		commyConn: cc,
		read:      ipc.ReadVariable{ServiceID: serviceID, VariableName: Variable},
		write:     ipc.WriteVariable{ServiceID: serviceID, VariableName: Variable},
	}
}

// batch replaces the queue with n frames of m, each with a fresh id, and
// returns it; Parse then decodes the replies into into.
func (cc *commyClient) batch(n int, m, into ipc.Message) ([]byte, error) {
	cc.buf = cc.buf[:0]
	cc.due, cc.replied = into, cc.next
	for range n {
		if err := cc.queue(m); err != nil {
			return nil, err
		}
	}
	return cc.buf, nil
}

func (cc *commyClient) Reads(n int) ([]byte, error) { return cc.batch(n, &cc.read, &cc.data) }

func (cc *commyClient) Writes(n int, value []byte) ([]byte, error) {
	cc.write.Data = value
	return cc.batch(n, &cc.write, &cc.written)
}

// Parse decodes each reply as Read or Write does, and checks that it
// answers the next request of the batch.
func (cc *commyClient) Parse(b []byte) (used, replies int, err error) {
	return frames(b, cc.take)
}

func (cc *commyClient) take(body []byte) error {
	if cc.due == nil {
		return errors.New("bench: commy: a reply with no batch sent")
	}
	if err := decodeReply(body, cc.due); err != nil {
		return err
	}
	cc.replied++
	if id := cc.due.Hdr().ID; id != cc.replied {
		return fmt.Errorf("bench: commy: the reply to request %d where %d was due", id, cc.replied)
	}
	return nil
}

func (cc *commyClient) Read(n int) error {
	if _, err := cc.Reads(n); err != nil {
		return err
	}
	_, err := cc.roundTrip(n, &cc.data)
	return err
}

func (cc *commyClient) Write(n int, value []byte) error {
	if _, err := cc.Writes(n, value); err != nil {
		return err
	}
	_, err := cc.roundTrip(n, &cc.written)
	return err
}

func (cc *commyClient) Publish(value []byte) error { return cc.Write(1, value) }

// commySubscriber decodes every notice in full, into one reused message, as
// the Redis side parses every message into reused buffers.
type commySubscriber struct {
	*commyConn
	vu *ipc.VariablesUpdated
}

// Subscriber implements System.
func (c *Commy) Subscriber() (Subscriber, error) {
	cc, err := c.dial()
	if err != nil {
		return nil, err
	}
	if _, err := cc.call(&ipc.Subscribe{ServiceID: c.serviceID}); err != nil {
		cc.Close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if cc.c.Started() {
		cc.Close()
		return nil, errors.New("bench: commy: a notice came with the reply to Subscribe")
	}
	return commySubscriber{cc, &ipc.VariablesUpdated{}}, nil
}

func (s commySubscriber) Parse(b []byte) (used, notices int, err error) {
	return frames(b, func(body []byte) error { return decodeReply(body, s.vu) })
}

// mapService asks for the service file and maps the descriptor that comes
// with the reply.
func (c *Commy) mapService(cc *commyConn) (*shm.Mapping, error) {
	if _, err := cc.call(&ipc.GetServiceFilePath{TenantID: c.tenant, ServiceName: c.service}); err != nil {
		return nil, err
	}
	f, ok := cc.c.TakeFD()
	if !ok {
		return nil, errors.New("bench: commy: no descriptor came with the service file path")
	}
	m, err := shm.Map(f) // takes f when it succeeds
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// MappedReader implements Mapper.
func (c *Commy) MappedReader() (func() error, func() error, error) {
	cc, err := c.dial()
	if err != nil {
		return nil, nil, err
	}
	m, err := c.mapService(cc)
	cc.Close()
	if err != nil {
		return nil, nil, err
	}
	var dst []byte
	read := func() error {
		var err error
		dst, _, err = m.Read(Variable, dst)
		return err
	}
	return read, m.Close, nil
}

// Opener implements Mapper.
func (c *Commy) Opener() (func() error, func() error, error) {
	cc, err := c.dial()
	if err != nil {
		return nil, nil, err
	}
	var dst []byte
	open := func() error {
		m, err := c.mapService(cc)
		if err != nil {
			return err
		}
		dst, _, err = m.Read(Variable, dst)
		if cerr := m.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return open, cc.Close, nil
}

var _ Mapper = (*Commy)(nil)
