package containers

import (
	"context"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/testutil"
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
