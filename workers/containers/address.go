package containers

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/internal/container"
)

// How a container that waits for its DHCP address is looked at: every
// addressPollFast for addressFastFor once its lease is granted (it
// configures the address a few milliseconds after), else every addressPoll
// (a runtime without lease news, or a lease not told).
var (
	addressPoll     = 100 * time.Millisecond
	addressPollFast = 10 * time.Millisecond
	addressFastFor  = time.Second
)

// leaseNews remembers when the network last granted each hardware address
// a lease, and wakes whoever waits for one.
type leaseNews struct {
	mu      sync.Mutex
	granted map[string]time.Time
	wake    chan struct{}
}

func newLeaseNews() *leaseNews {
	return &leaseNews{granted: map[string]time.Time{}, wake: make(chan struct{})}
}

// follow takes the runtime's news of leases until ctx ends; it returns at
// once when the runtime has none to give.
func (l *leaseNews) follow(ctx context.Context, rt container.Runtime, log zerolog.Logger) {
	lr, ok := rt.(container.Leases)
	if !ok {
		return
	}
	for ctx.Err() == nil {
		ch, err := lr.WatchLeases(ctx)
		if err != nil {
			log.Info().Err(err).Msg("no news of DHCP leases: addresses are looked for every 100 ms")
			return
		}
		for macs := range ch {
			l.add(time.Now(), macs...)
		}
		sleep(ctx, time.Second)
	}
}

// add notes leases granted at at and wakes the waiters.
func (l *leaseNews) add(at time.Time, macs ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range macs {
		l.granted[m] = at
	}
	for m, t := range l.granted {
		if at.Sub(t) > time.Minute {
			delete(l.granted, m)
		}
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// since says when mac was last granted a lease, if that was at or after t.
func (l *leaseNews) since(mac string, t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.granted[mac]
	return at, ok && mac != "" && !at.Before(t)
}

// next is closed when the next lease is granted.
func (l *leaseNews) next() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wake
}

// waitAddress waits until container name has an address or is not running
// (or addressWait passed), looking at it at once, then as the leases say.
// since is when it was seen starting: a lease granted before is an older boot's.
func (w *Worker) waitAddress(ctx context.Context, name string, since time.Time) error {
	deadline := time.Now().Add(addressWait)
	for {
		wake := w.leases.next()
		inst, err := w.rt.Get(ctx, name)
		if err != nil {
			return err
		}
		if inst.IPv4 != "" || inst.Status != "Running" || time.Now().After(deadline) {
			return nil
		}
		wait := addressPoll
		if at, ok := w.leases.since(inst.MAC, since); ok && time.Since(at) < addressFastFor {
			wait = addressPollFast
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}
