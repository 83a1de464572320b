package containers

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/workers"
)

// How a container that waits for its address is looked at: every
// addressPollFast for addressFastFor once its lease is granted (it
// configures the address a few milliseconds after) or, with an address of
// its own, from the start (skein's images set it at boot); else every
// addressPoll (a runtime without lease news, or a lease not told).
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
	began := time.Now()
	deadline := began.Add(addressWait)
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
		} else if inst.StaticIPv4 != "" && time.Since(began) < addressFastFor {
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

// addressAttempts bounds the addresses one launch tries: another project's
// container on the same network can hold one this server's list lacks, and
// Incus refuses it only when the container starts.
const addressAttempts = 3

// create creates the container of spec; with no address asked for, it gets
// a free one of the server's pool, reserved in Incus and set by the image at
// boot, so it need not wait for DHCP.
func (w *Worker) create(ctx context.Context, spec container.CreateSpec) error {
	if spec.IPv4 != "" {
		return w.rt.Create(ctx, spec)
	}
	ip, release, err := w.claimAddress(ctx, spec.Name, nil)
	if err != nil {
		return err
	}
	defer release()
	spec.IPv4 = ip.String()
	return w.rt.Create(ctx, spec)
}

// start starts container name; when Incus refuses the address the agent
// picked for it (picked: the launch asked for none) because another
// project's container holds it, the container gets another and starts.
func (w *Worker) start(ctx context.Context, name string, picked bool) error {
	err := w.rt.Start(ctx, name)
	avoid := map[netip.Addr]bool{}
	for attempt := 1; err != nil && picked && attempt < addressAttempts; attempt++ {
		inst, gerr := w.rt.Get(ctx, name)
		// Only a refusal naming the address is about it (Incus: IP address "…"
		// already defined on another NIC); e2e TestLaunchAvoidsAnAddressTakenOutside
		// holds Incus to it.
		if gerr != nil || inst.StaticIPv4 == "" || !container.IsPermanent(err) || !strings.Contains(err.Error(), `"`+inst.StaticIPv4+`"`) {
			return err
		}
		old, _ := netip.ParseAddr(inst.StaticIPv4)
		avoid[old] = true
		ip, release, cerr := w.claimAddress(ctx, name, avoid)
		if cerr != nil {
			return cerr
		}
		w.log.Info().Err(err).Str("container", name).Str("refused", inst.StaticIPv4).Str("ip", ip.String()).Msg("address held outside this server's containers: taking another")
		rerr := w.rt.Readdress(ctx, name, ip.String())
		release()
		if rerr != nil {
			return rerr
		}
		err = w.rt.Start(ctx, name)
	}
	return err
}

// claimAddress picks a free address for container name and holds it until
// release is called (after the create, when the runtime lists it).
func (w *Worker) claimAddress(ctx context.Context, name string, avoid map[netip.Addr]bool) (netip.Addr, func(), error) {
	sn, err := w.rt.Subnet(ctx)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("reading the container subnet: %w", err)
	}
	list, err := w.rt.List(ctx)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("listing containers: %w", err)
	}
	w.claimMu.Lock()
	defer w.claimMu.Unlock()
	used := map[netip.Addr]bool{}
	for a := range avoid {
		used[a] = true
	}
	for a := range w.claimed {
		used[a] = true
	}
	for _, i := range list {
		for _, s := range []string{i.IPv4, i.StaticIPv4} {
			if a, err := netip.ParseAddr(s); err == nil {
				used[a] = true
			}
		}
	}
	ip, ok := PickAddress(sn, name, used)
	if !ok {
		first, last := sn.Pool()
		return netip.Addr{}, nil, workers.Conflict("server %s has no free container address left in %s-%s: delete containers there, or launch on another server", w.server, first, last)
	}
	w.claimed[ip] = true
	return ip, func() {
		w.claimMu.Lock()
		defer w.claimMu.Unlock()
		delete(w.claimed, ip)
	}, nil
}

// PickAddress returns a usable address of sn's pool that used lacks,
// looking from a place the name decides: a container made again gets its
// address back when it is free, and a deleted container's address is not
// the next one given (neighbours' ARP caches still name its old MAC).
func PickAddress(sn container.Subnet, name string, used map[netip.Addr]bool) (netip.Addr, bool) {
	first, last := sn.Pool()
	lo, hi := u32(first), u32(last)
	if hi < lo {
		return netip.Addr{}, false
	}
	size := uint64(hi-lo) + 1
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	start := uint64(h.Sum32()) % size
	for i := uint64(0); i < size; i++ {
		a := fromU32(lo + uint32((start+i)%size))
		if sn.Contains(a) && !used[a] {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
