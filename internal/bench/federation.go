package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/commy/commy/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ScenarioFederation is a write on one broker until a mapped reader on a
// second, bridged broker has it, against the floor: a bare JetStream KV put
// until a KV watcher has it. It needs both brokers and NATS, so it is not
// in Scenarios; FederationRun measures it.
const ScenarioFederation = "federation"

// Federation is what the federation scenario needs.
type Federation struct {
	// Writer is the service on host A, holding Variable.
	Writer *client.Service
	// Remote is a client of host B's broker, whose bridge mirrors the
	// service from A.
	Remote          *client.Client
	Tenant, Service string
	// NATS is the URL of the NATS server (or cluster) the bridges use;
	// Bucket names the KV bucket made for the floor and deleted after.
	NATS     string
	Bucket   string
	Replicas int
}

// ErrNotMirrored: the value written on host A did not reach host B.
var ErrNotMirrored = errors.New("bench: the write on the first broker did not reach the second")

// FederationRun measures cfg.Rounds writes (or writes for cfg.Duration) of
// each path, alternating op by op so that both see the same load, after
// cfg.Warmup (at most 20) unmeasured ones. It returns the commy result and
// the floor's, as system "jetstream".
func FederationRun(ctx context.Context, cfg Config, f Federation) ([]Result, error) {
	cfg = cfg.withDefaults()
	if cfg.ValueSize < 8 {
		return nil, fmt.Errorf("bench: federation: values of at least 8 bytes, not %d", cfg.ValueSize)
	}
	value := make([]byte, cfg.ValueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	var n uint64
	next := func() []byte {
		n++
		binary.LittleEndian.PutUint64(value, n)
		return value
	}

	// The floor: a put on one connection, a watcher on another.
	pub, err := nats.Connect(f.NATS, nats.Name("commy-bench"))
	if err != nil {
		return nil, fmt.Errorf("bench: federation: NATS %s: %w", f.NATS, err)
	}
	defer pub.Close()
	sub, err := nats.Connect(f.NATS, nats.Name("commy-bench-watcher"))
	if err != nil {
		return nil, fmt.Errorf("bench: federation: NATS %s: %w", f.NATS, err)
	}
	defer sub.Close()
	js, err := jetstream.New(pub)
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: f.Bucket, Replicas: max(f.Replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("bench: federation: KV bucket %s: %w", f.Bucket, err)
	}
	defer js.DeleteKeyValue(context.Background(), f.Bucket)
	js2, err := jetstream.New(sub)
	if err != nil {
		return nil, err
	}
	kv2, err := js2.KeyValue(ctx, f.Bucket)
	if err != nil {
		return nil, err
	}
	w, err := kv2.Watch(ctx, Variable, jetstream.UpdatesOnly())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	floorOp := func() error {
		v := next()
		if _, err := kv.Put(ctx, Variable, v); err != nil {
			return err
		}
		timeout := time.NewTimer(10 * time.Second)
		defer timeout.Stop()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return errors.New("bench: federation: the KV watcher stopped")
				}
				if e != nil && bytes.Equal(e.Value(), v) {
					return nil
				}
			case <-timeout.C:
				return errors.New("bench: federation: the KV watcher had no update after 10s")
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}

	// The bridged path: the first write also waits for the service to
	// reach host B, then B's mapping is opened.
	if _, err := f.Writer.Write(ctx, Variable, next()); err != nil {
		return nil, err
	}
	var m *client.Mapping
	for deadline := time.Now().Add(10 * time.Second); ; {
		if svc, err := f.Remote.Service(ctx, f.Tenant, f.Service); err == nil {
			if b, _, err := svc.Read(ctx, Variable); err == nil && bytes.Equal(b, value) {
				if m, err = svc.Map(ctx); err != nil {
					return nil, err
				}
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w within 10s: do both bridges federate %s/%s?", ErrNotMirrored, f.Tenant, f.Service)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer m.Close()
	buf := make([]byte, 0, cfg.ValueSize)
	fedOp := func() error {
		v := next()
		seq := m.ChangeSeq()
		if _, err := f.Writer.Write(ctx, Variable, v); err != nil {
			return err
		}
		for {
			var err error
			if buf, _, err = m.Read(Variable, buf); err != nil {
				return err
			}
			if bytes.Equal(buf, v) {
				return nil
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			seq, err = m.Wait(wctx, seq)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return fmt.Errorf("%w after 10s", ErrNotMirrored)
			}
			if err != nil {
				return err
			}
		}
	}

	for range min(cfg.Warmup, 20) {
		if err := floorOp(); err != nil {
			return nil, err
		}
		if err := fedOp(); err != nil {
			return nil, err
		}
	}
	r := Result{Scenario: ScenarioFederation, System: "commy", Clients: 1, Pipeline: 1, ValueSize: cfg.ValueSize}
	fr := r
	fr.System = "jetstream"
	var fed, floor []time.Duration
	t0 := time.Now()
	for cfg.Duration > 0 && time.Since(t0) < cfg.Duration || cfg.Duration == 0 && len(fed) < cfg.Rounds {
		t := time.Now()
		if err := floorOp(); err != nil {
			return nil, err
		}
		floor = append(floor, time.Since(t))
		t = time.Now()
		if err := fedOp(); err != nil {
			return nil, err
		}
		fed = append(fed, time.Since(t))
	}
	elapsed := time.Since(t0)
	return []Result{summarize(r, fed, elapsed), summarize(fr, floor, elapsed)}, nil
}

// summarize fills in r's figures from its samples; both paths of an
// alternating run share the elapsed time, so ops/s is per path.
func summarize(r Result, lat []time.Duration, elapsed time.Duration) Result {
	r.Latencies, r.Ops, r.Seconds = lat, int64(len(lat)), elapsed.Seconds()
	r.summarize()
	return r
}
