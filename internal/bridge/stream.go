package bridge

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// outMsg is a batch waiting for JetStream's acknowledgement.
type outMsg struct {
	id       string
	subj     string
	data     []byte
	k        svcKey
	b        *batch
	inflight bool // the publisher is sending it; never merged
}

// outbox is the queue between the loop and the publisher. It is safe for
// concurrent use.
type outbox struct {
	mu     sync.Mutex
	q      []*outMsg
	bytes  int64
	signal chan struct{} // a token when q is not empty
}

func (o *outbox) push(m *outMsg) {
	o.mu.Lock()
	o.q = append(o.q, m)
	o.bytes += int64(len(m.data))
	o.mu.Unlock()
	select {
	case o.signal <- struct{}{}:
	default:
	}
}

func (o *outbox) len() (int, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.q), o.bytes
}

// head marks the first message in flight and returns it.
func (o *outbox) head() *outMsg {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.q) == 0 {
		return nil
	}
	o.q[0].inflight = true
	return o.q[0]
}

// pop removes the first message, the one in flight.
func (o *outbox) pop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.bytes -= int64(len(o.q[0].data))
	o.q[0] = nil
	o.q = o.q[1:]
}

// merge replaces the messages not in flight by what fn makes of them.
func (o *outbox) merge(fn func([]*outMsg) []*outMsg) {
	o.mu.Lock()
	defer o.mu.Unlock()
	keep := 0
	if len(o.q) > 0 && o.q[0].inflight {
		keep = 1
	}
	rest := fn(o.q[keep:])
	o.q = append(o.q[:keep:keep], rest...)
	o.bytes = 0
	for _, m := range o.q {
		o.bytes += int64(len(m.data))
	}
}

// streamConfig is the stream the bridge publishes to and reads from.
func (b *Bridge) streamConfig() jetstream.StreamConfig {
	js := b.cfg.JetStream
	return jetstream.StreamConfig{
		Name:        js.Stream,
		Description: "commy federation: one message per batch of changes of a service",
		Subjects:    []string{js.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    js.Replicas,
		MaxAge:      time.Duration(js.MaxAge),
		MaxBytes:    orUnlimited(js.MaxBytes),
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
	}
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// pause waits d or until the bridge closes, and reports whether it may go on.
func (b *Bridge) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// consume feeds the loop with the stream's messages from seq on, in order:
// it makes sure the stream exists, then reads it with an ordered consumer,
// which resumes by itself after a reconnection or a leader change. It
// tells the loop once it has delivered everything the stream held when it
// started.
func (b *Bridge) consume(seq uint64) {
	defer b.wg.Done()
	// The news goes through the same channel as the messages, so that the
	// loop has applied every message before it.
	told := false
	tell := func() {
		if !told {
			told = true
			select {
			case b.remote <- remoteMsg{caughtUp: true}:
			case <-b.ctx.Done():
			}
		}
	}
	for n := 0; b.ctx.Err() == nil; n++ {
		if n > 0 && !b.pause(min(time.Duration(n)*200*time.Millisecond, 2*time.Second)) {
			return
		}
		// Short attempts: JetStream does not answer requests that reach it
		// while a new stream elects its leader.
		ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
		s, err := b.js.CreateOrUpdateStream(ctx, b.streamConfig())
		var info *jetstream.StreamInfo
		if err == nil {
			info = s.CachedInfo() // an Info right after creation may find no leader yet
		}
		if err == nil && seq > 1 && info.State.LastSeq+1 < seq {
			// The stream is behind the saved position: it was deleted and
			// made again. Its sequences mean something else now.
			b.log.Warn("the stream is behind the saved position (it was made again?); reading it from its start",
				"saved", seq-1, "stream_last", info.State.LastSeq)
			seq = 1
			select {
			case b.remote <- remoteMsg{reset: true}:
			case <-b.ctx.Done():
			}
		} else if err == nil && seq > 1 && seq < info.State.FirstSeq {
			b.log.Warn("the stream no longer holds the saved position (max_age or max_bytes trimmed it); reading what is left",
				"saved", seq-1, "stream_first", info.State.FirstSeq)
		}
		var cons jetstream.Consumer
		if err == nil {
			cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
			if seq > 1 {
				cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
			}
			cons, err = s.OrderedConsumer(ctx, cfg)
		}
		cancel()
		if err != nil {
			if b.ctx.Err() == nil && (n == 0 || n%10 == 0) {
				b.log.Warn("jetstream not available; retrying", "stream", b.cfg.JetStream.Stream, "err", err)
			}
			continue
		}
		n = 0
		if info.State.LastSeq < seq {
			tell()
		}
		it, err := cons.Messages()
		if err != nil {
			b.log.Warn("stream not readable; retrying", "err", err)
			continue
		}
		stop := context.AfterFunc(b.ctx, it.Stop)
		for {
			msg, err := it.Next()
			if err != nil {
				if b.ctx.Err() == nil {
					b.log.Warn("stream reading stopped; resuming", "sequence", seq, "err", err)
				}
				break
			}
			meta, err := msg.Metadata()
			if err != nil {
				continue
			}
			bt, err := decodeBatch(msg.Data())
			if err != nil {
				b.log.Warn("stream message skipped", "sequence", meta.Sequence.Stream, "err", err)
				bt = nil
			}
			select {
			case b.remote <- remoteMsg{seq: meta.Sequence.Stream, id: msg.Headers().Get(jetstream.MsgIDHeader), b: bt}:
			case <-b.ctx.Done():
			}
			seq = meta.Sequence.Stream + 1
			if meta.NumPending == 0 || meta.Sequence.Stream >= info.State.LastSeq {
				tell()
			}
		}
		stop()
		it.Stop()
	}
}

// publish sends the outbox's messages to JetStream one at a time, in order,
// retrying each (with its message id, so JetStream drops duplicates) until
// it is acknowledged.
func (b *Bridge) publish() {
	defer b.wg.Done()
	for {
		m := b.out.head()
		if m == nil {
			select {
			case <-b.out.signal:
				continue
			case <-b.ctx.Done():
				return
			}
		}
		var ack *jetstream.PubAck
		var err error
		for n := 0; ; n++ {
			msg := nats.NewMsg(m.subj)
			msg.Data = m.data
			msg.Header.Set(jetstream.MsgIDHeader, m.id)
			msg.Header.Set(hdrOrigin, m.b.Origin)
			ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
			ack, err = b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(m.id))
			cancel()
			if err == nil || errors.Is(err, nats.ErrMaxPayload) || b.ctx.Err() != nil {
				break
			}
			if n == 0 || n%20 == 0 {
				b.log.Warn("publish failed; retrying", "service", m.k.String(), "err", err)
			}
			if !b.pause(min(time.Duration(n+1)*100*time.Millisecond, 2*time.Second)) {
				return
			}
		}
		if b.ctx.Err() != nil {
			return
		}
		b.out.pop()
		e := ackEvent{id: m.id, err: err}
		if ack != nil {
			e.seq = ack.Sequence
		}
		select {
		case b.acks <- e:
		case <-b.ctx.Done():
			return
		}
	}
}

// handleAck records an acknowledged batch, or drops one JetStream will never
// take.
func (b *Bridge) handleAck(a ackEvent) {
	if a.err != nil {
		b.stats.refused.WithLabelValues("too_large").Inc()
		if ob := b.awaiting[a.id]; ob != nil {
			b.log.Error("batch not replicated: JetStream refused it", "service", ob.k.String(), "err", a.err)
			delete(b.awaiting, a.id)
			b.pend(ob.k, ob, -1)
		}
	} else {
		b.stats.published.Inc()
	}
	b.bound()
}
