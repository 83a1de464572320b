package containers

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

// slowPolls makes the timer that looks for addresses too slow to matter in
// a test: only the leases' news can find them in time.
func slowPolls(t *testing.T) {
	saved := addressPoll
	addressPoll = time.Hour
	t.Cleanup(func() { addressPoll = saved })
}

// TestStartBehindSkeinsBackTakesTheAddressOnItsLease: the follower looks for
// a started container's address when DHCP grants it, not on a timer
// (BenchmarkPublication waited up to 200 ms here).
func TestStartBehindSkeinsBackTakesTheAddressOnItsLease(t *testing.T) {
	slowPolls(t)
	r := newRig(t, rigOptions{follow: true, before: func(f *container.Fake) { f.DelayAddress = true }})
	ctx := context.Background()
	if err := r.fake.Create(ctx, container.CreateSpec{Name: "web", Image: image}); err != nil {
		t.Fatal(err)
	}
	if err := r.fake.Start(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		rec := r.record(t, "web")
		return rec != nil && rec.Status == "Running"
	}, "the start was not recorded: %v", lazy(func() any { return r.record(t, "web") }))
	if rec := r.record(t, "web"); rec.IPv4 != "" {
		t.Fatalf("recorded %s before the lease", rec.IPv4)
	}
	r.fake.Grant("web")
	testutil.Eventually(t, 10*time.Second, func() bool {
		rec := r.record(t, "web")
		return rec != nil && rec.IPv4 != ""
	}, "the address was not recorded after the lease: %v", lazy(func() any { return r.record(t, "web") }))
	inSubnet(t, r.record(t, "web").IPv4)
	testutil.Eventually(t, 10*time.Second, func() bool {
		for _, e := range r.liveEvents() {
			if e.Type == events.TypeContainerUpdated && e.Name == "web" && e.IPv4 != "" {
				return true
			}
		}
		return false
	}, "the address was not told: %v", lazy(func() any { return r.liveEvents() }))
}

// TestLaunchAnswersOnTheLease: a launch waits for the address and answers
// when the lease comes, not on a timer.
func TestLaunchAnswersOnTheLease(t *testing.T) {
	slowPolls(t)
	r := newRig(t, rigOptions{follow: true, before: func(f *container.Fake) { f.DelayAddress = true }})
	type answer struct {
		c   *events.Container
		err error
	}
	done := make(chan answer, 1)
	go func() {
		_, c, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
		done <- answer{c, err}
	}()
	testutil.Eventually(t, 10*time.Second, func() bool {
		i, err := r.fake.Get(context.Background(), "web")
		return err == nil && i.Status == "Running"
	}, "web never started")
	r.fake.Grant("web")
	select {
	case a := <-done:
		if a.err != nil {
			t.Fatal(a.err)
		}
		inSubnet(t, a.c.IPv4)
	case <-time.After(10 * time.Second):
		t.Fatal("the launch did not answer after the lease")
	}
}

// TestLeaseNews: a lease wakes the waiters and counts from when it was granted.
func TestLeaseNews(t *testing.T) {
	l := newLeaseNews()
	wake := l.next()
	t0 := time.Now()
	l.add(t0, "10:66:6a:00:00:01")
	select {
	case <-wake:
	default:
		t.Fatal("a lease did not wake the waiters")
	}
	if _, ok := l.since("10:66:6a:00:00:01", t0.Add(-time.Second)); !ok {
		t.Error("a lease granted after since is not seen")
	}
	if _, ok := l.since("10:66:6a:00:00:01", t0.Add(time.Second)); ok {
		t.Error("a lease granted before since (an earlier boot's) is seen")
	}
	if _, ok := l.since("", t0.Add(-time.Second)); ok {
		t.Error("a container without a hardware address matched")
	}
	l.add(t0.Add(2*time.Minute), "10:66:6a:00:00:02")
	if _, ok := l.since("10:66:6a:00:00:01", t0.Add(-time.Second)); ok {
		t.Error("a lease older than a minute is kept")
	}
}

func TestPickAddress(t *testing.T) {
	pool := container.Subnet{Prefix: netip.MustParsePrefix("10.77.1.0/24"), Gateway: netip.MustParseAddr("10.77.1.1"),
		First: netip.MustParseAddr("10.77.1.50"), Last: netip.MustParseAddr("10.77.1.250")}
	inPool := func(a netip.Addr) bool {
		return !a.Less(pool.First) && !pool.Last.Less(a)
	}
	a, ok := PickAddress(pool, "web", nil)
	if !ok || !inPool(a) {
		t.Fatalf("PickAddress = %s, %v; want an address in %s-%s", a, ok, pool.First, pool.Last)
	}
	if b, _ := PickAddress(pool, "web", nil); b != a {
		t.Errorf("the same name picked %s, then %s", a, b)
	}
	// Taken: the next free one, still in the pool.
	b, ok := PickAddress(pool, "web", map[netip.Addr]bool{a: true})
	if !ok || b == a || !inPool(b) {
		t.Errorf("with %s used: %s, %v", a, b, ok)
	}
	// Every name lands in the pool, and names spread over it.
	seen := map[netip.Addr]bool{}
	for i := range 50 {
		a, ok := PickAddress(pool, fmt.Sprintf("c%d", i), nil)
		if !ok || !inPool(a) {
			t.Fatalf("c%d: %s, %v", i, a, ok)
		}
		seen[a] = true
	}
	if len(seen) < 30 {
		t.Errorf("50 names got only %d addresses", len(seen))
	}
	// A full pool gives none.
	used := map[netip.Addr]bool{}
	for a := pool.First; !pool.Last.Less(a); a = a.Next() {
		used[a] = true
	}
	if a, ok := PickAddress(pool, "web", used); ok {
		t.Errorf("full pool gave %s", a)
	}
	// Without a DHCP range: the whole subnet but its network, gateway and broadcast.
	small := container.Subnet{Prefix: netip.MustParsePrefix("10.77.9.0/30"), Gateway: netip.MustParseAddr("10.77.9.1")}
	if a, ok := PickAddress(small, "x", nil); !ok || a != netip.MustParseAddr("10.77.9.2") {
		t.Errorf("/30 with gateway .1: %s, %v; want 10.77.9.2", a, ok)
	}
	if a, ok := PickAddress(small, "x", map[netip.Addr]bool{netip.MustParseAddr("10.77.9.2"): true}); ok {
		t.Errorf("full /30 gave %s", a)
	}
}

// TestLaunchesGetDistinctStaticAddresses: launches at once each get an
// address of their own, reserved in the runtime (so a restart keeps it).
func TestLaunchesGetDistinctStaticAddresses(t *testing.T) {
	r := newRig(t, rigOptions{})
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = r.do(t, events.TypeLaunch, "", events.Launch{Name: fmt.Sprintf("c%d", i), Image: image})
		}()
	}
	wg.Wait()
	seen := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("c%d", i)
		if errs[i] != nil {
			t.Fatalf("launch %s: %v", name, errs[i])
		}
		inst, err := r.fake.Get(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if inst.StaticIPv4 == "" || inst.IPv4 != inst.StaticIPv4 {
			t.Errorf("%s: address %q, reserved %q; want one reserved address", name, inst.IPv4, inst.StaticIPv4)
		}
		inSubnet(t, inst.IPv4)
		if other, dup := seen[inst.IPv4]; dup {
			t.Errorf("%s and %s both got %s", other, name, inst.IPv4)
		}
		seen[inst.IPv4] = name
	}
}

// TestLaunchAvoidsAnAddressTakenOutside: an address the server's list lacks
// but the network has (another project's container) is refused by the
// runtime when the container starts; it gets another one and starts.
func TestLaunchAvoidsAnAddressTakenOutside(t *testing.T) {
	sn := container.NewFake(subnet, image)
	s, _ := sn.Subnet(context.Background())
	first, _ := PickAddress(s, "web", nil)
	r := newRig(t, rigOptions{before: func(f *container.Fake) { f.Taken = map[string]bool{first.String(): true} }})
	_, c, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	if c.IPv4 == "" || c.IPv4 == first.String() {
		t.Fatalf("launched with %q; want an address other than the taken %s", c.IPv4, first)
	}
	if n := r.calls("Readdress"); n != 1 {
		t.Errorf("Readdress called %d times, want 1", n)
	}
	inst, err := r.fake.Get(context.Background(), "web")
	if err != nil || inst.StaticIPv4 != c.IPv4 {
		t.Errorf("reserved %+v, %v; want %s", inst, err, c.IPv4)
	}
}

// TestLaunchOnAFullServerIsRefused: no free address left is a clear refusal
// that creates nothing.
func TestLaunchOnAFullServerIsRefused(t *testing.T) {
	r := newRig(t, rigOptions{before: func(f *container.Fake) {
		ctx := context.Background()
		s, _ := f.Subnet(ctx)
		first, last := s.Pool()
		for a := first; !last.Less(a); a = a.Next() {
			if s.Contains(a) {
				if err := f.Create(ctx, container.CreateSpec{Name: "x" + strings.ReplaceAll(a.String(), ".", "-"), Image: image, IPv4: a.String()}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}})
	_, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	wantCode(t, err, workers.CodeConflict)
	if err == nil || !strings.Contains(err.Error(), "no free container address") {
		t.Errorf("error %v; want it to say no free container address", err)
	}
}

// TestLaunchKeepsTheAddressAskedFor: an address the user asked for (--ip)
// that Incus refuses is never swapped for another.
func TestLaunchKeepsTheAddressAskedFor(t *testing.T) {
	const asked = "10.77.9.20"
	r := newRig(t, rigOptions{before: func(f *container.Fake) { f.Taken = map[string]bool{asked: true} }})
	_, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image, IPv4: asked})
	wantCode(t, err, workers.CodeConflict)
	if err == nil || !strings.Contains(err.Error(), asked) {
		t.Fatalf("launch with a held --ip: %v; want a refusal naming %s", err, asked)
	}
	if n := r.calls("Readdress"); n != 0 {
		t.Errorf("Readdress called %d times for an address asked for", n)
	}
}
