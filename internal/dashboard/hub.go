package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
)

// subBuffer is how many messages a page may fall behind before it is let go
// (its stream ends; the page reconnects and reloads the records).
const subBuffer = 256

// hub follows the records and the events once for every open page: one
// watcher per bucket and one events consumer however many pages are open,
// rather than eleven more of them on the bus for each page.
type hub struct {
	js jetstream.JetStream

	mu   sync.Mutex
	subs map[chan []byte]struct{}
	stop context.CancelFunc // ends the current following; nil when none runs
}

// join adds a page: its channel gets every change from now on, as
// server-sent events, and is closed when the following breaks (a watcher
// lost with its bus connection) or the page falls too far behind. leave
// takes the page away; the following stops with the last page.
func (h *hub) join() (ch <-chan []byte, leave func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stop == nil {
		if err := h.follow(); err != nil {
			return nil, nil, err
		}
	}
	c := make(chan []byte, subBuffer)
	h.subs[c] = struct{}{}
	return c, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[c]; !ok {
			return // let go already
		}
		delete(h.subs, c)
		close(c)
		if len(h.subs) == 0 && h.stop != nil {
			h.stop()
			h.stop = nil
		}
	}, nil
}

// follow starts the watchers and the events consumer; h.mu is held.
func (h *hub) follow() error {
	ctx, cancel := context.WithCancel(context.Background())
	// Bounded: joining pages wait for this under h.mu.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	h.subs = map[chan []byte]struct{}{}
	var watchers []jetstream.KeyWatcher
	fail := func(what string, err error) error {
		cancel()
		for _, w := range watchers {
			_ = w.Stop()
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, b := range Buckets {
		kv, err := h.js.KeyValue(sctx, b)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			continue // a bucket not made yet: nothing of that kind
		}
		if err != nil {
			// Not skipped: the following is shared and long-lived, a bucket
			// left out now would stay out of every page.
			return fail("opening the records", err)
		}
		wt, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
		if err != nil {
			return fail("watching the records", err)
		}
		watchers = append(watchers, wt)
		go h.watch(ctx, cancel, b, wt)
	}
	cons, err := h.js.OrderedConsumer(sctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy,
		// Gone from the bus soon after the last page: nothing deletes it otherwise for minutes.
		InactiveThreshold: 5 * time.Second})
	if err != nil {
		return fail("following the events", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if json.Valid(m.Data()) {
			h.send(ctx, "event", json.RawMessage(m.Data()))
		}
	})
	if err != nil {
		return fail("following the events", err)
	}
	go func() {
		<-ctx.Done()
		cc.Stop()
	}()
	// A reconnection (the bus restarted, a NATS node lost) ends the following
	// as a broken watcher does: the pages load the records afresh at once,
	// instead of seeing nothing until nats.go's watchers resume (20 s).
	reconnected := h.js.Conn().StatusChanged(nats.CONNECTED)
	go func() {
		defer h.js.Conn().RemoveStatusListener(reconnected)
		select {
		case <-ctx.Done():
		case <-reconnected:
			h.broken(ctx, cancel)
		}
	}()
	h.stop = cancel
	return nil
}

// watch sends one bucket's changes until ctx ends; a watcher that stops
// ends the following (cancel) and lets every page go.
func (h *hub) watch(ctx context.Context, cancel context.CancelFunc, bucket string, wt jetstream.KeyWatcher) {
	defer func() { _ = wt.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-wt.Updates():
			if !ok {
				h.broken(ctx, cancel)
				return
			}
			if e == nil {
				continue
			}
			rec := record{Bucket: bucket, Key: e.Key()}
			if e.Operation() == jetstream.KeyValuePut {
				v, err := bus.CheckedRecord(h.js.Conn(), bucket, e.Key(), e.Value(), e.Created())
				if err != nil {
					continue // not its writer's: not shown
				}
				rec.Value = redact(v)
			} else if bus.CheckedDeletion(h.js.Conn(), bucket, e.Key(), e.Value(), e.Created()) != nil {
				continue // a deletion not its writer's: the record stands
			}
			h.send(ctx, "record", rec)
		}
	}
}

// broken ends the following that ctx belongs to and lets its pages go.
func (h *hub) broken(ctx context.Context, cancel context.CancelFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ctx.Err() != nil {
		return // stopped already (the last page left)
	}
	cancel()
	h.stop = nil
	for c := range h.subs {
		close(c)
	}
	h.subs = map[chan []byte]struct{}{}
}

// send gives every page one message; a page too far behind is let go.
func (h *hub) send(ctx context.Context, kind string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	msg := []byte(fmt.Sprintf("event: %s\ndata: %s\n\n", kind, b))
	h.mu.Lock()
	defer h.mu.Unlock()
	if ctx.Err() != nil {
		return // a following that ended: its pages are gone
	}
	for c := range h.subs {
		select {
		case c <- msg:
		default:
			delete(h.subs, c)
			close(c)
		}
	}
	if len(h.subs) == 0 && h.stop != nil {
		h.stop()
		h.stop = nil
	}
}
