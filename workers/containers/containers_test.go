package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

const (
	server = "s1"
	subnet = "10.77.9.0/24"
	image  = "img"
)

// watchedFake tells the test when the worker's lifecycle follower is listening.
type watchedFake struct {
	*container.Fake
	once     sync.Once
	watching chan struct{}
}

func (f *watchedFake) Watch(ctx context.Context) (<-chan container.Event, error) {
	ch, err := f.Fake.Watch(ctx)
	f.once.Do(func() { close(f.watching) })
	return ch, err
}

// rig is one server's container worker on an embedded bus, driven by a CLI client.
type rig struct {
	fake   *container.Fake
	w      *Worker
	store  *bus.Store[events.Container]
	conn   *bus.Conn // the client's connection
	client *bus.Client
	ctx    context.Context

	mu   sync.Mutex
	live []event // events received live on core NATS
}

type event struct {
	Subject string
	Type    string
	events.ContainerEvent
}

func (e event) String() string {
	return fmt.Sprintf("%s(%s %s %s %s)", e.Type, e.Name, e.Status, e.Cause, e.IPv4)
}

type rigOptions struct {
	follow bool                  // run the lifecycle follower (Worker.Run)
	before func(*container.Fake) // set the fake up before anything runs
	// wrap stands between the worker and the fake (to inject failures).
	wrap func(container.Runtime) container.Runtime
	// js wraps the agent's JetStream (to inject publish failures).
	js func(jetstream.JetStream) jetstream.JetStream
	// ready is the server's readiness (nil: always ready).
	ready func(ctx context.Context, image string) error
	// fetch fetches an image from the bus (nil: none is).
	fetch func(ctx context.Context, image string) (bool, error)
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	conn, url := testutil.Bus(t)
	aconn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent-" + server, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{fake: container.NewFake(subnet, image), conn: conn, client: bus.NewClient(conn, "cli"), ctx: ctx}
	if o.before != nil {
		o.before(r.fake)
	}
	r.store, err = bus.OpenStore[events.Container](ctx, aconn.JS)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := conn.NC.Subscribe(bus.EventFilter(server, ""), func(m *nats.Msg) {
		ev, err := decodeEvent(m.Subject, m.Data)
		if err != nil {
			t.Errorf("bad event on %s: %v", m.Subject, err)
			return
		}
		r.mu.Lock()
		r.live = append(r.live, ev)
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	rtm := container.Runtime(r.fake)
	wf := &watchedFake{Fake: r.fake, watching: make(chan struct{})}
	if o.follow {
		rtm = wf
	}
	if o.wrap != nil {
		rtm = o.wrap(rtm)
	}
	js := aconn.JS
	if o.js != nil {
		js = o.js(js)
	}
	pub := bus.NewPublisher(js, "agent/"+server, server)
	r.w = New(server, rtm, r.store, pub, zerolog.Nop())
	if o.ready != nil {
		r.w.SetReadiness(o.ready)
	}
	if o.fetch != nil {
		r.w.SetFetcher(o.fetch)
	}
	rt := workers.NewRuntime(aconn, server, zerolog.Nop())
	r.w.Register(rt)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = rt.Run(ctx) }()
	if o.follow {
		wg.Add(1)
		go func() { defer wg.Done(); r.w.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop within 10s")
		}
		_ = sub.Unsubscribe()
		aconn.Close()
	})
	if o.follow {
		select {
		case <-wf.watching:
		case <-time.After(10 * time.Second):
			t.Fatal("the lifecycle follower never watched")
		}
	}
	return r
}

// lazy formats its value when printed, so a failure message shows the state at failure.
type lazy func() any

func (l lazy) String() string { return fmt.Sprint(l()) }

func decodeEvent(subject string, raw []byte) (event, error) {
	env, err := events.Decode(raw)
	if err != nil {
		return event{}, err
	}
	ev := event{Subject: subject, Type: env.Type}
	if env.Server != server {
		return ev, fmt.Errorf("event about server %q", env.Server)
	}
	return ev, env.Payload(&ev.ContainerEvent)
}

func (r *rig) liveEvents() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.live...)
}

// stored returns the container events in the events stream, oldest first. The
// worker's publisher waits for JetStream's ack, so once a worker call returns
// its events are here: counting them needs no waiting.
func (r *rig) stored(t *testing.T) []event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.conn.JS.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []event
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		ev, err := decodeEvent(m.Subject, m.Data)
		if err != nil {
			t.Fatalf("event %d on %s: %v", seq, m.Subject, err)
		}
		out = append(out, ev)
	}
	return out
}

func only(evs []event, typ string) []event {
	var out []event
	for _, e := range evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// calls reads the fake's call counter. The fake updates Calls under its lock, so
// take the lock once first (any method does) to order the read after its writes.
// Only for rigs without the follower, which calls the fake on its own.
func (r *rig) calls(method string) int {
	_, _ = r.fake.ImageExists(context.Background(), image)
	return r.fake.Calls[method]
}

func (r *rig) record(t *testing.T, name string) *events.Container {
	t.Helper()
	e, err := r.store.Find(r.ctx, bus.Key(server, name))
	if err != nil {
		t.Fatal(err)
	}
	if e == nil {
		return nil
	}
	return &e.Value
}

// do sends a command to s1 and waits for its result; the error is the command's.
func (r *rig) do(t *testing.T, typ, id string, payload any) (*events.Envelope, *events.Container, error) {
	t.Helper()
	env, err := r.client.NewCommand(server, typ, id, payload)
	if err != nil {
		// Refused by the client: sent anyway, to see the agent refuse it too.
		env = testutil.UncheckedCommand(server, typ, payload)
	}
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	res, err := r.client.Do(ctx, bus.Call{Envelope: env})
	var ce *bus.CommandError
	if err != nil && !errors.As(err, &ce) {
		t.Fatalf("%s: %v", typ, err)
	}
	if err != nil {
		return env, nil, err
	}
	var c events.Container
	if err := json.Unmarshal(res.Output, &c); err != nil {
		t.Fatalf("%s output %s: %v", typ, res.Output, err)
	}
	return env, &c, nil
}

func (r *rig) mustDo(t *testing.T, typ, name string) *events.Container {
	t.Helper()
	_, c, err := r.do(t, typ, "", events.ContainerAction{Name: name})
	if err != nil {
		t.Fatalf("%s %s: %v", typ, name, err)
	}
	return c
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var ce *bus.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v, want a command error %s", err, code)
	}
	if ce.Code != code {
		t.Errorf("error code = %s (%s), want %s", ce.Code, ce.Message, code)
	}
}

func inSubnet(t *testing.T, ip string) {
	t.Helper()
	a, err := netip.ParseAddr(ip)
	if err != nil {
		t.Fatalf("address %q: %v", ip, err)
	}
	p := netip.MustParsePrefix(subnet)
	if !a.Is4() || !p.Contains(a) {
		t.Errorf("address %s is not an IPv4 in %s", ip, subnet)
	}
}

// A launch of an image the server lacks fetches it from the bus when it is
// stored there, and is refused naming both places when it is not.
func TestLaunchFetchesTheImageFromTheBus(t *testing.T) {
	var asked []string
	var r *rig
	r = newRig(t, rigOptions{fetch: func(ctx context.Context, img string) (bool, error) {
		asked = append(asked, img)
		if img != "on-the-bus" {
			return false, nil
		}
		r.fake.AddImage(img)
		return true, nil
	}})
	if _, c, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "fetched", Image: "on-the-bus"}); err != nil || c.Status != "Running" {
		t.Fatalf("launch of an image on the bus: %+v %v", c, err)
	}
	_, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "nowhere", Image: "nowhere"})
	if err == nil || !strings.Contains(err.Error(), `image "nowhere" is neither on server `+server+" nor on the bus") {
		t.Errorf("an image on neither: %v", err)
	}
	if _, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "local", Image: image}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(asked, ",") != "on-the-bus,nowhere" {
		t.Errorf("the bus was asked for %v, want the lacking images only", asked)
	}
}

// The scheduler's question (does the server have the image?) counts an
// image the server can fetch from the bus: a job may be placed on servers
// that never ran it (found by the machines soak on a fresh bed: "image
// skein-busybox is on none of the servers", though the bus had it).
func TestAnImageOnTheBusCountsForPlacement(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.w.SetStored(func(ctx context.Context, img string) (bool, error) { return img == "on-the-bus", nil })
	for img, want := range map[string]bool{image: true, "on-the-bus": true, "nowhere": false} {
		got, err := r.w.HasImage(context.Background(), nil, events.ImageAsk{Image: img})
		if err != nil || got.Exists != want {
			t.Errorf("image.ask %s = %+v, %v; want exists %v", img, got, err, want)
		}
	}
}

func TestLaunch(t *testing.T) {
	r := newRig(t, rigOptions{follow: true})
	env, c, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "web" || c.Server != server || c.Status != "Running" || c.Image != image || c.Command != env.ID {
		t.Errorf("launch output = %+v", c)
	}
	inSubnet(t, c.IPv4)

	list, err := r.fake.List(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "web" || list[0].Command != env.ID || list[0].Status != "Running" {
		t.Errorf("containers on the server = %+v, want web only", list)
	}

	rec := r.record(t, "web")
	if rec == nil {
		t.Fatal("no record of web")
	}
	if rec.Status != "Running" || rec.IPv4 != c.IPv4 || rec.Server != server || rec.Command != env.ID || rec.Image != image {
		t.Errorf("record = %+v, want Running at %s", rec, c.IPv4)
	}

	var created, started []event
	testutil.Eventually(t, 10*time.Second, func() bool {
		evs := r.liveEvents()
		created, started = only(evs, events.TypeContainerCreated), only(evs, events.TypeContainerStarted)
		return len(created) > 0 && len(started) > 0
	}, "launch events: got %v", lazy(func() any { return r.liveEvents() }))
	if e := created[0]; e.Subject != bus.EventSubject(server, events.TypeContainerCreated) || e.Name != "web" {
		t.Errorf("created event = %+v", e)
	}
	if e := started[0]; e.Subject != bus.EventSubject(server, events.TypeContainerStarted) || e.Name != "web" || e.Status != "Running" || e.IPv4 != c.IPv4 {
		t.Errorf("started event = %+v, want web Running at %s", e, c.IPv4)
	}
}

func TestLaunchSameNameOtherCommandConflicts(t *testing.T) {
	r := newRig(t, rigOptions{})
	first, c, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	if err != nil {
		t.Fatal(err)
	}
	creates := r.calls("Create")
	_, _, err = r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	wantCode(t, err, workers.CodeConflict)
	if n := r.calls("Create"); n != creates {
		t.Errorf("Create called %d times, want %d", n, creates)
	}
	if rec := r.record(t, "web"); rec == nil || rec.Command != first.ID || rec.IPv4 != c.IPv4 {
		t.Errorf("record after the conflict = %+v, want the first launch's", rec)
	}
}

func TestLaunchMadeOutsideSkeinConflicts(t *testing.T) {
	r := newRig(t, rigOptions{before: func(f *container.Fake) {
		if err := f.Create(context.Background(), container.CreateSpec{Name: "web", Image: image}); err != nil {
			t.Fatal(err)
		}
	}})
	_, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	wantCode(t, err, workers.CodeConflict)
	if n := r.calls("Create"); n != 1 {
		t.Errorf("Create called %d times, want only the test's 1", n)
	}
	// The reservation, if any, must not stay behind to block the name.
	if rec := r.record(t, "web"); rec != nil && rec.Status == StatusCreating {
		t.Errorf("reservation left behind: %+v", rec)
	}
}

func TestLaunchSameCommandTwiceCreatesOnce(t *testing.T) {
	r := newRig(t, rigOptions{})
	p := events.Launch{Name: "web", Image: image}
	env, c1, err := r.do(t, events.TypeLaunch, "launch-web-1", p)
	if err != nil {
		t.Fatal(err)
	}
	// A client retrying with the same id gets the same answer.
	_, c2, err := r.do(t, events.TypeLaunch, "launch-web-1", p)
	if err != nil {
		t.Fatal(err)
	}
	if c1.IPv4 != c2.IPv4 || c2.Command != env.ID {
		t.Errorf("retry answered %+v, want %+v", c2, c1)
	}
	// A redelivery reaching the handler again resumes instead of creating.
	c3, err := r.w.Launch(r.ctx, &workers.Request{Envelope: env, Attempt: 2, Log: zerolog.Nop()}, p)
	if err != nil {
		t.Fatalf("redelivered launch: %v", err)
	}
	if c3.Status != "Running" || c3.IPv4 != c1.IPv4 {
		t.Errorf("redelivered launch = %+v", c3)
	}
	if n := r.calls("Create"); n != 1 {
		t.Errorf("Create called %d times for one command, want 1", n)
	}
	if n := r.calls("Start"); n != 1 {
		t.Errorf("Start called %d times for one command, want 1", n)
	}
}

func TestLaunchUnknownImage(t *testing.T) {
	r := newRig(t, rigOptions{})
	_, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: "nope"})
	wantCode(t, err, workers.CodeNotFound)
	if rec := r.record(t, "web"); rec != nil {
		t.Errorf("record left behind: %+v", rec)
	}
	if n := r.calls("Create"); n != 0 {
		t.Errorf("Create called %d times", n)
	}
	// The name is free for a launch that works.
	if _, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image}); err != nil {
		t.Errorf("launch after the failed one: %v", err)
	}
}

func TestLaunchRefusedByRuntimeReleasesName(t *testing.T) {
	r := newRig(t, rigOptions{before: func(f *container.Fake) {
		f.FailCreate = &container.PermanentError{Err: errors.New("bad request: storage pool is read-only")}
	}})
	_, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	wantCode(t, err, workers.CodeInvalid)
	if rec := r.record(t, "web"); rec != nil {
		t.Errorf("reservation not released: %+v", rec)
	}
	if _, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image}); err != nil {
		t.Errorf("launch after the refused one: %v", err)
	}
}

func TestLaunchTransientCreateFailureIsRetried(t *testing.T) {
	r := newRig(t, rigOptions{before: func(f *container.Fake) {
		f.FailCreate = errors.New("incus: connection refused")
	}})
	env, c, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	if err != nil {
		t.Fatalf("launch after one transient failure: %v", err)
	}
	if c.Status != "Running" || c.Command != env.ID {
		t.Errorf("launch output = %+v", c)
	}
	if n := r.calls("Create"); n != 2 {
		t.Errorf("Create called %d times, want 2 (one failure, one retry)", n)
	}
}

func TestLaunchStaticAddress(t *testing.T) {
	tests := []struct {
		name string
		ip   string
		code string // "" for success
	}{
		{"inside the subnet", "10.77.9.20", ""},
		{"last usable", "10.77.9.254", ""},
		{"outside the subnet", "10.77.8.20", workers.CodeInvalid},
		{"the gateway", "10.77.9.1", workers.CodeInvalid},
		{"the network address", "10.77.9.0", workers.CodeInvalid},
		{"the broadcast address", "10.77.9.255", workers.CodeInvalid},
		{"not an address", "10.77.9.300", workers.CodeInvalid},
		{"too few parts", "10.77.9", workers.CodeInvalid},
	}
	r := newRig(t, rigOptions{})
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("c%d", i)
			creates := r.calls("Create")
			_, c, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: name, Image: image, IPv4: tc.ip})
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.IPv4 != tc.ip {
					t.Errorf("address = %s, want %s", c.IPv4, tc.ip)
				}
				return
			}
			wantCode(t, err, tc.code)
			if n := r.calls("Create"); n != creates {
				t.Errorf("Create called for a refused address")
			}
			if rec := r.record(t, name); rec != nil {
				t.Errorf("record left for a refused address: %+v", rec)
			}
		})
	}
	t.Run("already in use", func(t *testing.T) {
		_, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "dup", Image: image, IPv4: "10.77.9.20"})
		wantCode(t, err, workers.CodeConflict)
		if rec := r.record(t, "dup"); rec != nil {
			t.Errorf("record left for a taken address: %+v", rec)
		}
	})
}

func TestActionsAreIdempotent(t *testing.T) {
	r := newRig(t, rigOptions{})
	if _, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		typ    string
		status string
		method string // the fake method that may run
		runs   int    // how many times it runs in this step
	}{
		{"stop", events.TypeStop, "Stopped", "Stop", 1},
		{"second stop is a no-op", events.TypeStop, "Stopped", "Stop", 0},
		{"start", events.TypeStart, "Running", "Start", 1},
		{"second start is a no-op", events.TypeStart, "Running", "Start", 0},
		{"restart", events.TypeRestart, "Running", "Restart", 1},
		{"stop before restart", events.TypeStop, "Stopped", "Stop", 1},
		{"restart of a stopped container starts it", events.TypeRestart, "Running", "Start", 1},
		{"delete", events.TypeDelete, "Deleted", "Delete", 1},
		{"delete of a missing container succeeds", events.TypeDelete, "Deleted", "Delete", 0},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := r.calls(s.method)
			c := r.mustDo(t, s.typ, "web")
			if c.Status != s.status || c.Name != "web" || c.Server != server {
				t.Errorf("output = %+v, want status %s", c, s.status)
			}
			if n := r.calls(s.method) - before; n != s.runs {
				t.Errorf("%s ran %d times, want %d", s.method, n, s.runs)
			}
			rec := r.record(t, "web")
			switch s.status {
			case "Running":
				inSubnet(t, c.IPv4)
				if rec == nil || rec.Status != "Running" || rec.IPv4 != c.IPv4 {
					t.Errorf("record = %+v, want Running at %s", rec, c.IPv4)
				}
			case "Stopped":
				if c.IPv4 != "" || rec == nil || rec.Status != "Stopped" || rec.IPv4 != "" {
					t.Errorf("output %+v record %+v, want Stopped without address", c, rec)
				}
			case "Deleted":
				if rec != nil {
					t.Errorf("record of a deleted container: %+v", rec)
				}
				if _, err := r.fake.Get(r.ctx, "web"); !errors.Is(err, container.ErrNotFound) {
					t.Errorf("container still on the server: %v", err)
				}
			}
		})
	}
	for _, typ := range []string{events.TypeStart, events.TypeStop, events.TypeRestart} {
		t.Run(typ+" of a missing container", func(t *testing.T) {
			_, _, err := r.do(t, typ, "", events.ContainerAction{Name: "web"})
			wantCode(t, err, workers.CodeNotFound)
		})
	}
}

// restartOnce makes the first Restart fail, before or after restarting.
type restartOnce struct {
	container.Runtime
	fake  *container.Fake
	after bool // restart, then fail: the answer was lost
	mu    sync.Mutex
	done  bool
}

func (f *restartOnce) Restart(ctx context.Context, name string, force bool) error {
	f.mu.Lock()
	first := !f.done
	f.done = true
	f.mu.Unlock()
	if !first {
		return f.Runtime.Restart(ctx, name, force)
	}
	if f.after {
		if err := f.Runtime.Restart(ctx, name, force); err != nil {
			return err
		}
	}
	return errors.New("incus: connection reset")
}

// TestRedeliveredRestartRestartsOnce: whether the first attempt failed before
// or after restarting, the command ends with exactly one restart. Idempotency
// comes from the container's boot, journaled, not from the delivery count.
func TestRedeliveredRestartRestartsOnce(t *testing.T) {
	for _, after := range []bool{false, true} {
		t.Run(fmt.Sprintf("failed after restarting=%v", after), func(t *testing.T) {
			var flaky *restartOnce
			r := newRig(t, rigOptions{wrap: func(rt container.Runtime) container.Runtime {
				flaky = &restartOnce{Runtime: rt, after: after}
				return flaky
			}})
			_, c, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
			if err != nil {
				t.Fatal(err)
			}
			boot := func() string {
				inst, err := r.fake.Get(r.ctx, "web")
				if err != nil {
					t.Fatal(err)
				}
				return inst.Boot
			}
			before := boot()
			_, out, err := r.do(t, events.TypeRestart, "", events.ContainerAction{Name: "web"})
			if err != nil {
				t.Fatal(err)
			}
			if out.Status != "Running" || out.Name != c.Name {
				t.Errorf("output = %+v", out)
			}
			if n := r.calls("Restart"); n != 1 {
				t.Errorf("the container was restarted %d times, want exactly 1", n)
			}
			if boot() == before {
				t.Errorf("the container was not restarted: boot still %s", before)
			}
		})
	}
}

func TestFollowerRecordsChangesBehindSkeinsBack(t *testing.T) {
	r := newRig(t, rigOptions{follow: true})
	_, c, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	if err != nil {
		t.Fatal(err)
	}
	inSubnet(t, c.IPv4)

	r.fake.SetStatusBehindBack("web", "Stopped", "instance-stopped")
	var stopped []event
	testutil.Eventually(t, 10*time.Second, func() bool {
		stopped = only(r.liveEvents(), events.TypeContainerStopped)
		return len(stopped) > 0
	}, "no container.stopped event; got %v", lazy(func() any { return r.liveEvents() }))
	e := stopped[0]
	if e.Subject != bus.EventSubject(server, events.TypeContainerStopped) || e.Name != "web" || e.Status != "Stopped" || e.Cause != "incus" || e.Action != "instance-stopped" || e.IPv4 != "" {
		t.Errorf("stopped event = %+v, want web Stopped, cause incus, action instance-stopped", e)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		rec := r.record(t, "web")
		return rec != nil && rec.Status == "Stopped" && rec.IPv4 == ""
	}, "record not updated: %v", lazy(func() any { return r.record(t, "web") }))

	// A reconcile after the lifecycle event does not tell the stop again.
	if err := r.w.Reconcile(r.ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(only(r.stored(t), events.TypeContainerStopped)); n != 1 {
		t.Errorf("%d container.stopped events stored, want 1: %v", n, r.stored(t))
	}

	// Deleted with the incus CLI: the record goes and the deletion is told.
	if err := r.fake.Delete(r.ctx, "web"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		return len(only(r.liveEvents(), events.TypeContainerDeleted)) > 0 && r.record(t, "web") == nil
	}, "deletion behind skein's back not recorded; events %v", lazy(func() any { return r.liveEvents() }))
	if e := only(r.liveEvents(), events.TypeContainerDeleted)[0]; e.Cause != "incus" || e.Name != "web" {
		t.Errorf("deleted event = %+v", e)
	}
}

func TestReconcile(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := r.ctx
	// A container made with the incus CLI while the agent was not watching.
	if err := r.fake.Create(ctx, container.CreateSpec{Name: "web", Image: image}); err != nil {
		t.Fatal(err)
	}
	if err := r.fake.Start(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	inst, err := r.fake.Get(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}

	seen := 0
	newEvents := func() []event {
		all := r.stored(t)
		out := all[seen:]
		seen = len(all)
		return out
	}
	reconcile := func(t *testing.T) []event {
		t.Helper()
		if err := r.w.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		return newEvents()
	}
	steps := []struct {
		name   string
		change func(t *testing.T)
		want   []string // event types, in order
		status string   // the record's status after, "" for no record
	}{
		{"found", nil, []string{events.TypeContainerCreated, events.TypeContainerStarted}, "Running"},
		{"nothing changed", nil, nil, "Running"},
		{"stopped behind the back", func(t *testing.T) {
			r.fake.SetStatusBehindBack("web", "Stopped", "instance-stopped") // no one watches: lost
		}, []string{events.TypeContainerStopped}, "Stopped"},
		{"stopped, again", nil, nil, "Stopped"},
		{"the lost lifecycle event arrives late", func(t *testing.T) {
			if _, err := r.w.observe(ctx, "web", events.TypeContainerStopped, "instance-stopped"); err != nil {
				t.Fatal(err)
			}
		}, nil, "Stopped"},
		{"deleted behind the back", func(t *testing.T) {
			if err := r.fake.Delete(ctx, "web"); err != nil {
				t.Fatal(err)
			}
		}, []string{events.TypeContainerDeleted}, ""},
		{"deleted, again", nil, nil, ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.change != nil {
				s.change(t)
			}
			got := reconcile(t)
			if len(got) != len(s.want) {
				t.Fatalf("events = %v, want %v", got, s.want)
			}
			for i, e := range got {
				if e.Type != s.want[i] || e.Name != "web" || e.Cause != "reconcile" || e.Subject != bus.EventSubject(server, e.Type) {
					t.Errorf("event %d = %+v, want %s about web with cause reconcile", i, e, s.want[i])
				}
			}
			rec := r.record(t, "web")
			if s.status == "" {
				if rec != nil {
					t.Errorf("record = %+v, want none", rec)
				}
				return
			}
			if rec == nil || rec.Status != s.status || rec.Server != server {
				t.Fatalf("record = %+v, want status %s", rec, s.status)
			}
			if s.status == "Running" && rec.IPv4 != inst.IPv4 {
				t.Errorf("record address = %s, want %s", rec.IPv4, inst.IPv4)
			}
		})
	}
}

func TestReconcileReservations(t *testing.T) {
	r := newRig(t, rigOptions{})
	put := func(c events.Container) {
		if _, err := r.store.Put(r.ctx, bus.Key(c.Server, c.Name), c); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	put(events.Container{Name: "fresh", Server: server, Status: StatusCreating, Command: "c1", Updated: now})
	put(events.Container{Name: "stale", Server: server, Status: StatusCreating, Command: "c2", Updated: now.Add(-staleReservation - time.Minute)})
	put(events.Container{Name: "gone", Server: server, Status: "Running", IPv4: "10.77.9.60", Updated: now})
	put(events.Container{Name: "elsewhere", Server: "s2", Status: "Running", Updated: now})

	// As Run does when the agent starts: the records say what was announced before.
	r.w.loadTold(r.ctx)
	if err := r.w.Reconcile(r.ctx); err != nil {
		t.Fatal(err)
	}
	if rec := r.record(t, "fresh"); rec == nil || rec.Status != StatusCreating {
		t.Errorf("a launch in progress lost its reservation: %+v", rec)
	}
	if rec := r.record(t, "stale"); rec != nil {
		t.Errorf("a stale reservation was kept: %+v", rec)
	}
	if rec := r.record(t, "gone"); rec != nil {
		t.Errorf("the record of a container that no longer exists was kept: %+v", rec)
	}
	if e, err := r.store.Find(r.ctx, bus.Key("s2", "elsewhere")); err != nil || e == nil || e.Value.Server != "s2" {
		t.Errorf("another server's record was touched: %+v %v", e, err)
	}
	deleted := map[string]bool{}
	for _, e := range r.stored(t) {
		if e.Type != events.TypeContainerDeleted {
			t.Errorf("unexpected event %v", e)
		}
		deleted[e.Name] = true
	}
	if !deleted["gone"] || deleted["fresh"] || deleted["elsewhere"] {
		t.Errorf("deleted events for %v, want gone (and maybe stale) only", deleted)
	}
}

// With the follower running, a launch is told as Incus saw it: created, then
// started, each once, with cause "incus"; the handler itself announces nothing.
func TestLaunchEventsInOrder(t *testing.T) {
	for i := 0; i < 10; i++ {
		r := newRig(t, rigOptions{follow: true})
		r.mustLaunch(t, "web")
		testutil.Eventually(t, 5*time.Second, func() bool {
			return len(only(r.stored(t), events.TypeContainerStarted)) == 1
		}, "no started event; events %v", lazy(func() any { return r.stored(t) }))
		got := r.stored(t)
		if len(got) < 2 || got[0].Type != events.TypeContainerCreated || got[1].Type != events.TypeContainerStarted {
			t.Fatalf("run %d: events %v, want created then started", i, got)
		}
		for _, e := range got[:2] {
			if e.Cause != "incus" {
				t.Fatalf("run %d: %v told with cause %s, want incus", i, e, e.Cause)
			}
		}
	}
}

// With the lifecycle stream down, reconciliation still tells every change once:
// a launch, a delete and a relaunch of the same name.
func TestChangesWhileNotFollowingAreToldOnce(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.w.loadTold(r.ctx)
	reconcile := func() []event {
		t.Helper()
		before := len(r.stored(t))
		if err := r.w.Reconcile(r.ctx); err != nil {
			t.Fatal(err)
		}
		return r.stored(t)[before:]
	}
	types := func(evs []event) string {
		var s []string
		for _, e := range evs {
			s = append(s, e.Type)
		}
		return strings.Join(s, ",")
	}
	r.mustLaunch(t, "web")
	if got := types(reconcile()); got != "container.created,container.started" {
		t.Fatalf("after launch: %s", got)
	}
	if got := types(reconcile()); got != "" {
		t.Fatalf("second reconcile told again: %s", got)
	}
	// A delete by skein tells the deletion itself, before the record goes.
	before := len(r.stored(t))
	r.mustDo(t, events.TypeDelete, "web")
	if got := types(r.stored(t)[before:]); got != "container.deleted" {
		t.Fatalf("after delete: %s", got)
	}
	if got := types(reconcile()); got != "" {
		t.Fatalf("reconcile after delete told again: %s", got)
	}
	r.mustLaunch(t, "web")
	if got := types(reconcile()); got != "container.created,container.started" {
		t.Fatalf("after relaunch: %s", got)
	}
}

func (r *rig) mustLaunch(t *testing.T, name string) {
	t.Helper()
	if _, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: name, Image: image}); err != nil {
		t.Fatalf("launch %s: %v", name, err)
	}
}

// flakyJS fails publishes of events: the first fails of them, optionally
// after the event reached the stream (the ack lost on the way back).
type flakyJS struct {
	jetstream.JetStream
	mu        sync.Mutex
	fails     int
	delivered bool
	failed    int
}

func (f *flakyJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	f.mu.Lock()
	fail := strings.HasPrefix(m.Subject, "skein.event.") && f.failed < f.fails
	if fail {
		f.failed++
	}
	f.mu.Unlock()
	if !fail {
		return f.JetStream.PublishMsg(ctx, m, opts...)
	}
	if f.delivered {
		if _, err := f.JetStream.PublishMsg(ctx, m, opts...); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("nats: timeout")
}

// TestEventPublishFailureIsRetried: a lifecycle change whose event cannot be
// published at first is told once the bus takes it, exactly once id-wise, also
// when the first try reached the stream and only its ack was lost.
func TestEventPublishFailureIsRetried(t *testing.T) {
	for _, delivered := range []bool{false, true} {
		t.Run(fmt.Sprintf("first try reached the stream=%v", delivered), func(t *testing.T) {
			flaky := &flakyJS{fails: 2, delivered: delivered}
			r := newRig(t, rigOptions{follow: true, js: func(js jetstream.JetStream) jetstream.JetStream {
				flaky.JetStream = js
				return flaky
			}})
			r.mustLaunch(t, "web")
			r.fake.SetStatusBehindBack("web", "Stopped", "instance-stopped")
			testutil.Eventually(t, 10*time.Second, func() bool {
				return len(only(r.stored(t), events.TypeContainerStopped)) > 0
			}, "the stop was never told; stored %v", lazy(func() any { return r.stored(t) }))
			flaky.mu.Lock()
			failed := flaky.failed
			flaky.mu.Unlock()
			if failed != 2 {
				t.Fatalf("%d publishes failed, want 2", failed)
			}
			// Every change told once: created, started, stopped, whatever failed on the way.
			got := r.stored(t)
			var types []string
			for _, e := range got {
				types = append(types, e.Type)
			}
			if strings.Join(types, ",") != "container.created,container.started,container.stopped" {
				t.Errorf("stored events %v, want created, started, stopped once each", types)
			}
			ids := map[string]int{}
			for _, e := range r.storedIDs(t) {
				ids[e]++
			}
			for id, n := range ids {
				if n != 1 {
					t.Errorf("event %s stored %d times", id, n)
				}
			}
		})
	}
}

// storedIDs returns the ids of the events in the events stream, oldest first.
func (r *rig) storedIDs(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.conn.JS.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		env, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, env.ID)
	}
	return out
}

// A server that lacks its network refuses launches and starts with the fix,
// before Incus is asked, and creates nothing; stopping still works; once the
// network is there the same launch works.
func TestDegradedServerRefusesWithTheFix(t *testing.T) {
	var lacking atomic.Bool
	const fix = "network skeinbr9 not found: run skein up --prepare or pass --network"
	r := newRig(t, rigOptions{ready: func(ctx context.Context, img string) error {
		if lacking.Load() {
			return workers.Unready("server %s is degraded: %s", server, fix)
		}
		return nil
	}})
	if _, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "old", Image: image}); err != nil {
		t.Fatal(err)
	}
	lacking.Store(true)
	_, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image})
	wantCode(t, err, workers.CodeUnavailable)
	if err == nil || !strings.Contains(err.Error(), fix) {
		t.Errorf("launch on a degraded server: %v, want the fix %q", err, fix)
	}
	if n := r.calls("Create"); n != 1 {
		t.Errorf("Create called %d times, want once (for old)", n)
	}
	if rec := r.record(t, "web"); rec != nil {
		t.Errorf("a refused launch left a record: %+v", rec)
	}
	r.mustDo(t, events.TypeStop, "old")
	_, _, err = r.do(t, events.TypeStart, "", events.ContainerAction{Name: "old"})
	if err == nil || !strings.Contains(err.Error(), fix) {
		t.Errorf("start on a degraded server: %v, want the fix", err)
	}
	lacking.Store(false)
	if _, _, err := r.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: image}); err != nil {
		t.Errorf("launch once the network is there: %v", err)
	}
}
