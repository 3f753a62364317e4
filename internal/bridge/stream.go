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
	inflight bool      // sent at least once: never merged, sent again until acknowledged
	sent     *nats.Msg // the attempt waiting for its acknowledgement, if any
}

// outbox is the queue of batches until JetStream acknowledges them; its
// head is the one published. It is safe for concurrent use (Status reads
// its length without Bridge.mu).
type outbox struct {
	mu    sync.Mutex
	q     []*outMsg
	bytes int64
}

func (o *outbox) push(m *outMsg) {
	o.mu.Lock()
	o.q = append(o.q, m)
	o.bytes += int64(len(m.data))
	o.mu.Unlock()
}

func (o *outbox) len() (int, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.q), o.bytes
}

// head returns the first message, or nil.
func (o *outbox) head() *outMsg {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.q) == 0 {
		return nil
	}
	return o.q[0]
}

// pop removes the first message.
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

// consume applies the stream's messages from seq on, in order, on its own
// goroutine as it reads them: it makes sure the stream exists, then reads it
// with an ordered consumer, which resumes by itself after a reconnection or
// a leader change. Once it has applied everything the stream held when it
// started, the bridge is caught up.
func (b *Bridge) consume(seq uint64) {
	defer b.wg.Done()
	told := false
	tell := func() {
		if !told {
			told = true
			b.mu.Lock()
			if b.ctx.Err() == nil {
				b.catchUpDone()
			}
			b.mu.Unlock()
		}
	}
	apply := func(m remoteMsg) {
		b.mu.Lock()
		if b.ctx.Err() == nil {
			b.applyRemote(m)
		}
		b.mu.Unlock()
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
			apply(remoteMsg{reset: true})
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
			apply(remoteMsg{seq: meta.Sequence.Stream, id: msg.Headers().Get(jetstream.MsgIDHeader), b: bt})
			seq = meta.Sequence.Stream + 1
			if meta.NumPending == 0 || meta.Sequence.Stream >= info.State.LastSeq {
				tell()
			}
		}
		stop()
		it.Stop()
	}
}

// sendLocked publishes the outbox's head unless it waits for its
// acknowledgement or for a retry. One batch is in flight at a time: a
// failed one is sent again (with its message id, so JetStream drops a
// duplicate) before anything after it, so the stream has this host's
// batches in this host's order. The caller holds mu.
func (b *Bridge) sendLocked() {
	m := b.out.head()
	if m == nil || m.sent != nil || b.pubBackoff || b.ctx.Err() != nil {
		return
	}
	msg := nats.NewMsg(m.subj)
	msg.Data = m.data
	msg.Header.Set(jetstream.MsgIDHeader, m.id)
	msg.Header.Set(hdrOrigin, m.b.Origin)
	m.inflight, m.sent = true, msg
	if _, err := b.pubJS.PublishMsgAsync(msg); err != nil {
		b.pubFailedLocked(m, err)
	}
}

// onAck is JetStream's acknowledgement of a publish; it runs on nats.go's
// goroutine for the replies and sends the next batch from there.
func (b *Bridge) onAck(_ jetstream.JetStream, msg *nats.Msg, _ *jetstream.PubAck) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.out.head()
	if m == nil || m.sent != msg || b.ctx.Err() != nil {
		return // an attempt given up on already
	}
	b.out.pop()
	b.pubTries = 0
	b.handleAck(m.id, nil)
	b.sendLocked()
}

// onPubErr is a publish that failed or was not acknowledged in time.
// nats.go may call it with its own lock held, so it only hands the failure
// to the retrier.
func (b *Bridge) onPubErr(_ jetstream.JetStream, msg *nats.Msg, err error) {
	b.errMu.Lock()
	b.pubErrs = append(b.pubErrs, pubErr{msg, err})
	b.errMu.Unlock()
	select {
	case b.pubRetry <- struct{}{}:
	default:
	}
}

// pubFailedLocked records a failed attempt at m, the head: a batch NATS
// can never take is dropped, anything else is sent again after a pause.
// The caller holds mu.
func (b *Bridge) pubFailedLocked(m *outMsg, err error) {
	m.sent = nil
	if errors.Is(err, nats.ErrMaxPayload) {
		b.out.pop()
		b.pubTries = 0
		b.handleAck(m.id, err)
		b.sendLocked()
		return
	}
	if b.pubTries == 0 || b.pubTries%20 == 0 {
		b.log.Warn("publish failed; retrying", "service", m.k.String(), "err", err)
	}
	b.pubTries++
	b.pubBackoff = true
	select {
	case b.pubRetry <- struct{}{}:
	default:
	}
}

// retrier sends a failed batch again after a pause that grows with each
// failure, up to 2s.
func (b *Bridge) retrier() {
	defer b.wg.Done()
	for {
		select {
		case <-b.pubRetry:
		case <-b.ctx.Done():
			return
		}
		b.errMu.Lock()
		errs := b.pubErrs
		b.pubErrs = nil
		b.errMu.Unlock()
		b.mu.Lock()
		for _, e := range errs {
			if m := b.out.head(); m != nil && m.sent == e.msg {
				b.pubFailedLocked(m, e.err)
			}
		}
		wait := b.pubBackoff
		d := min(time.Duration(b.pubTries)*100*time.Millisecond, 2*time.Second)
		b.mu.Unlock()
		if !wait {
			continue
		}
		if !b.pause(d) {
			return
		}
		b.mu.Lock()
		b.pubBackoff = false
		b.sendLocked()
		b.mu.Unlock()
	}
}

// handleAck records an acknowledged batch, or drops one JetStream will never
// take. The caller holds mu.
func (b *Bridge) handleAck(id string, err error) {
	if err != nil {
		b.stats.refused.WithLabelValues("too_large").Inc()
		if ob := b.awaiting[id]; ob != nil {
			b.log.Error("batch not replicated: JetStream refused it", "service", ob.k.String(), "err", err)
			delete(b.awaiting, id)
			b.pend(ob.k, ob, -1)
		}
	} else {
		b.stats.published.Inc()
	}
	b.bound()
}
