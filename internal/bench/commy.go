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
		if into != nil && ipc.DecodeInto(body, into) == nil {
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
		if into != nil {
			return nil, fmt.Errorf("bench: commy: %s where %s was due", m.Kind(), into.Kind())
		}
		last = m
	}
	return last, nil
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

type commyClient struct {
	*commyConn
	read    ipc.ReadVariable
	write   ipc.WriteVariable
	data    ipc.VariableData    // read's replies
	written ipc.VariableWritten // write's replies
}

// Conn implements System.
func (c *Commy) Conn() (Conn, error) {
	cc, err := c.dial()
	if err != nil {
		return nil, err
	}
	return &commyClient{
		commyConn: cc,
		read:      ipc.ReadVariable{ServiceID: c.serviceID, VariableName: Variable},
		write:     ipc.WriteVariable{ServiceID: c.serviceID, VariableName: Variable},
	}, nil
}

func (cc *commyClient) Read(n int) error {
	for range n {
		if err := cc.queue(&cc.read); err != nil {
			return err
		}
	}
	_, err := cc.roundTrip(n, &cc.data)
	return err
}

func (cc *commyClient) Write(n int, value []byte) error {
	cc.write.Data = value
	for range n {
		if err := cc.queue(&cc.write); err != nil {
			return err
		}
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

func (s commySubscriber) SyscallConn() (syscall.RawConn, error) {
	return s.c.UnixConn().SyscallConn()
}

func (s commySubscriber) Parse(b []byte) (used, notices int, err error) {
	for {
		body, size := ipc.SplitFrame(b[used:])
		if size == 0 {
			return used, notices, nil
		}
		if err := ipc.DecodeInto(body, s.vu); err != nil {
			return used, notices, fmt.Errorf("bench: commy: %w", err)
		}
		used += size
		notices++
	}
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
