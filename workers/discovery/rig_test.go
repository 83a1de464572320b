package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/containers"
	"github.com/skeinhq/skein/workers/svc"
)

const (
	rigServer   = "s1"
	rigSubnet   = "127.77.9.0/24"
	rigImage    = "skein-busybox"
	rigEPName   = "consul-10"
	rigEPIP     = "10.77.9.10"
	rigEPDNS    = "10.77.9.10#8600"
	waitLong    = 15 * time.Second
	commandWait = 30 * time.Second
)

// fakeCatalog is an in-memory Consul catalog that records what it was asked.
type fakeCatalog struct {
	mu     sync.Mutex
	nodes  map[string]consul.Node
	calls  []string // "register web", "checks web", "deregister web"
	writes []string // every check status written: "web/skein:port=passing"
}

var _ Catalog = (*fakeCatalog)(nil)

func newFakeCatalog() *fakeCatalog { return &fakeCatalog{nodes: map[string]consul.Node{}} }

func cloneNode(n consul.Node) consul.Node {
	c := consul.Node{Name: n.Name, Address: n.Address, Meta: map[string]string{}}
	for k, v := range n.Meta {
		c.Meta[k] = v
	}
	for _, s := range n.Services {
		s.Tags = append([]string(nil), s.Tags...)
		c.Services = append(c.Services, s)
	}
	c.Checks = append([]consul.Check(nil), n.Checks...)
	return c
}

func (c *fakeCatalog) Register(ctx context.Context, n consul.Node) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "register "+n.Name)
	c.nodes[n.Name] = cloneNode(n)
	c.wrote(n.Name, n.Checks)
	return nil
}

// wrote records check statuses written. Called with c.mu held.
func (c *fakeCatalog) wrote(node string, checks []consul.Check) {
	for _, ch := range checks {
		c.writes = append(c.writes, node+"/"+ch.ID+"="+ch.Status)
	}
}

// statusWrites returns every check status written so far.
func (c *fakeCatalog) statusWrites() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.writes...)
}

// UpdateChecks writes check statuses as Consul does: by check ID, creating the
// node at address if it has none.
func (c *fakeCatalog) UpdateChecks(ctx context.Context, node, address string, checks []consul.Check) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "checks "+node)
	c.wrote(node, checks)
	n, ok := c.nodes[node]
	if !ok {
		n = consul.Node{Name: node, Address: address, Meta: map[string]string{}}
	}
	n = cloneNode(n)
	for _, ch := range checks {
		replaced := false
		for i := range n.Checks {
			if n.Checks[i].ID == ch.ID {
				n.Checks[i], replaced = ch, true
			}
		}
		if !replaced {
			n.Checks = append(n.Checks, ch)
		}
	}
	c.nodes[node] = n
	return nil
}

func (c *fakeCatalog) Deregister(ctx context.Context, node string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "deregister "+node)
	delete(c.nodes, node)
	return nil
}

func (c *fakeCatalog) Nodes(ctx context.Context, meta map[string]string) (map[string][]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]string{}
	for name, n := range c.nodes {
		match := true
		for k, v := range meta {
			if n.Meta[k] != v {
				match = false
			}
		}
		if match {
			ids := []string{}
			for _, s := range n.Services {
				ids = append(ids, s.Name)
			}
			sort.Strings(ids)
			out[name] = ids
		}
	}
	return out, nil
}

// NodeChecks returns the matching nodes with their checks, durations spelled
// back as Consul does ("1m" as "1m0s").
func (c *fakeCatalog) NodeChecks(ctx context.Context, meta map[string]string) ([]consul.Node, error) {
	nodes, _ := c.Nodes(ctx, meta)
	var names []string
	for name := range nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []consul.Node
	for _, name := range names {
		n, ok := c.node(name)
		if !ok {
			continue
		}
		n.Services = nil
		for i := range n.Checks {
			n.Checks[i].Interval, n.Checks[i].Timeout = consulDuration(n.Checks[i].Interval), consulDuration(n.Checks[i].Timeout)
		}
		out = append(out, n)
	}
	return out, nil
}

func consulDuration(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil || d == 0 {
		return ""
	}
	return d.String()
}

// node returns a copy of a node the catalog holds.
func (c *fakeCatalog) node(name string) (consul.Node, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[name]
	if !ok {
		return consul.Node{}, false
	}
	return cloneNode(n), true
}

// plant changes the catalog behind skein's back.
func (c *fakeCatalog) plant(n consul.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[n.Name] = cloneNode(n)
}

func (c *fakeCatalog) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, name)
}

func (c *fakeCatalog) callLog() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

func (c *fakeCatalog) count(call string) int {
	n := 0
	for _, x := range c.callLog() {
		if x == call {
			n++
		}
	}
	return n
}

func (c *fakeCatalog) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	names := make([]string, 0, len(c.nodes))
	for n := range c.nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(&b, "%+v; ", c.nodes[name])
	}
	fmt.Fprintf(&b, "calls %v", c.calls)
	return b.String()
}

// rigRuntime is the fake server, telling the test when the containers worker's
// follower listens and keeping the DNS forwarding readable without a race.
type rigRuntime struct {
	*container.Fake
	once     sync.Once
	watching chan struct{}

	mu       sync.Mutex
	dnsCalls int
}

func (r *rigRuntime) Watch(ctx context.Context) (<-chan container.Event, error) {
	ch, err := r.Fake.Watch(ctx)
	r.once.Do(func() { close(r.watching) })
	return ch, err
}

func (r *rigRuntime) ForwardDNS(ctx context.Context, domain string, servers []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dnsCalls++
	return r.Fake.ForwardDNS(ctx, domain, servers)
}

// forwarding is what the fake's DNS["consul"] holds and how often it was set.
func (r *rigRuntime) forwarding() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.Fake.DNS["consul"]...), r.dnsCalls
}

// liveEvent is one event received on core NATS.
type liveEvent struct {
	Subject string
	Env     *events.Envelope
}

// rig is one server's containers and discovery workers on an embedded bus,
// driven by a CLI client, with a fake catalog instead of Consul.
type rig struct {
	ctx    context.Context
	rt     *rigRuntime
	cat    *fakeCatalog
	dw     *Worker
	client *bus.Client

	// What a new discovery worker is made of, and how to stop the running one.
	dwConfig Config
	stopDW   func()

	endpoints, services, ctrs, adhoc jetstream.KeyValue

	mu   sync.Mutex
	live []liveEvent
}

func newRig(t *testing.T) *rig {
	t.Helper()
	conn, url := testutil.Bus(t)
	aconn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent-" + rigServer, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{ctx: ctx, cat: newFakeCatalog(), client: bus.NewClient(conn, "cli"),
		rt: &rigRuntime{Fake: container.NewFake(rigSubnet, rigImage, "skein-service"), watching: make(chan struct{})}}
	for name, kv := range map[string]*jetstream.KeyValue{bucket[events.Endpoint](): &r.endpoints, bucket[events.Definitions](): &r.services, bucket[events.Container](): &r.ctrs, bucket[events.Adhoc](): &r.adhoc} {
		if *kv, err = conn.JS.KeyValue(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := conn.NC.Subscribe(bus.EventFilter(rigServer, ""), func(m *nats.Msg) {
		env, err := events.Decode(m.Data)
		if err != nil {
			t.Errorf("bad event on %s: %v", m.Subject, err)
			return
		}
		r.mu.Lock()
		r.live = append(r.live, liveEvent{Subject: m.Subject, Env: env})
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	cstore, err := bus.OpenStore[events.Container](ctx, aconn.JS)
	if err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(aconn.JS, "agent/"+rigServer, rigServer)
	cw := containers.New(rigServer, r.rt, cstore, pub, zerolog.Nop())
	wrt := workers.NewRuntime(aconn, rigServer, zerolog.Nop())
	host := &svc.Host{Server: rigServer, Image: "skein-service", Runtime: r.rt, Containers: cw, Locks: wrt, Answered: wrt.Answered, Health: &svc.Health{}, Log: zerolog.Nop()}
	r.dwConfig = Config{Deps: svc.Deps{Host: host, JS: aconn.JS, Publisher: pub}, Log: zerolog.Nop(), Catalog: r.cat}
	r.dw, err = New(ctx, r.dwConfig)
	if err != nil {
		t.Fatal(err)
	}
	cw.Register(wrt)
	r.dw.Register(wrt)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = wrt.Run(ctx) }()
	go func() { defer wg.Done(); cw.Run(ctx) }()
	r.runDW()
	t.Cleanup(func() {
		r.stopDW()
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("workers did not stop within 10s")
		}
		_ = sub.Unsubscribe()
		aconn.Close()
	})
	select {
	case <-r.rt.watching:
	case <-time.After(10 * time.Second):
		t.Fatal("the containers worker never watched the runtime")
	}
	return r
}

// runDW runs r.dw until stopDW.
func (r *rig) runDW() {
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.dw.Run(ctx) }()
	r.stopDW = func() { cancel(); <-done }
}

// restartDiscovery stops the discovery worker and runs a new one on the same bus
// and catalog, as an agent restart does. Commands still reach the first worker's
// handlers, which only write the buckets the new one follows.
func (r *rig) restartDiscovery(t *testing.T) {
	t.Helper()
	r.stopDW()
	dw, err := New(r.ctx, r.dwConfig)
	if err != nil {
		t.Fatal(err)
	}
	r.dw = dw
	r.runDW()
}

// do sends a command to s1 and waits for its result: the output, or the command's error.
func (r *rig) do(t *testing.T, typ string, payload any) (json.RawMessage, error) {
	t.Helper()
	env, err := r.client.NewCommand(rigServer, typ, "", payload)
	if err != nil {
		// Refused by the client: sent anyway, to see the agent refuse it too.
		env = testutil.UncheckedCommand(rigServer, typ, payload)
	}
	ctx, cancel := context.WithTimeout(r.ctx, commandWait)
	defer cancel()
	res, err := r.client.Do(ctx, bus.Call{Envelope: env})
	var ce *bus.CommandError
	if err != nil && !errors.As(err, &ce) {
		t.Fatalf("%s: %v", typ, err)
	}
	if err != nil {
		return nil, err
	}
	return res.Output, nil
}

// mustDo sends a command that must succeed and decodes its output into out (if not nil).
func (r *rig) mustDo(t *testing.T, typ string, payload, out any) {
	t.Helper()
	raw, err := r.do(t, typ, payload)
	if err != nil {
		t.Fatalf("%s %+v: %v", typ, payload, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s output %s: %v", typ, raw, err)
		}
	}
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

// launch starts a container through the containers worker and returns its record.
func (r *rig) launch(t *testing.T, name string) events.Container {
	t.Helper()
	var c events.Container
	r.mustDo(t, events.TypeLaunch, events.Launch{Name: name, Image: rigImage}, &c)
	if c.Status != "Running" || c.IPv4 == "" {
		t.Fatalf("launched %s = %+v, want Running with an address", name, c)
	}
	return c
}

func (r *rig) putJSON(t *testing.T, kv jetstream.KeyValue, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(r.ctx, key, b); err != nil {
		t.Fatal(err)
	}
}

// seedEndpoint writes an endpoint record, as AddEndpoint would once Consul answers.
// Its container is made too (without a record): an endpoint record whose
// container is gone is a ghost that the endpoints' reconciler removes.
func (r *rig) seedEndpoint(t *testing.T, name, ip, status string) {
	t.Helper()
	if _, err := r.rt.Fake.Get(r.ctx, name); err != nil {
		if err := r.rt.Fake.Create(r.ctx, container.CreateSpec{Name: name, Image: "skein-service", IPv4: ip}); err != nil {
			t.Fatal(err)
		}
	}
	r.putJSON(t, r.endpoints, bus.Key(rigServer, name), events.Endpoint{Resource: events.Resource{Name: name, Server: rigServer, Status: status, Updated: time.Now().UTC()}, IP: ip})
}

// bucket is the name of the bucket of record type T.
func bucket[T any]() string {
	spec, _ := events.StateOf[T]()
	return spec.Bucket
}

// revision is the revision of key in kv, 0 when it has none.
func (r *rig) revision(t *testing.T, kv jetstream.KeyValue, key string) uint64 {
	t.Helper()
	e, err := kv.Get(r.ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return e.Revision()
}

func (r *rig) definitions(t *testing.T, name string) events.Definitions {
	t.Helper()
	e, err := r.services.Get(r.ctx, bus.Key(rigServer, name))
	if err != nil {
		t.Fatalf("definitions of %s: %v", name, err)
	}
	var d events.Definitions
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// knows waits until the worker's followers hold what cond checks (called under the worker's lock).
func (r *rig) knows(t *testing.T, cond func(w *Worker) bool, msg string) {
	t.Helper()
	testutil.Eventually(t, waitLong, func() bool {
		r.dw.mu.Lock()
		defer r.dw.mu.Unlock()
		return cond(r.dw)
	}, msg)
}

// waitNode waits until the catalog's node name satisfies ok, or is absent when ok is nil.
func (r *rig) waitNode(t *testing.T, name string, ok func(consul.Node) bool, msg string) consul.Node {
	t.Helper()
	var n consul.Node
	testutil.Eventually(t, waitLong, func() bool {
		var present bool
		n, present = r.cat.node(name)
		if ok == nil {
			return !present
		}
		return present && ok(n)
	}, "%s: catalog is %v", msg, r.cat)
	return n
}

// eventsOf returns the live events of a type, checking their subject.
func (r *rig) eventsOf(t *testing.T, typ string) []*events.Envelope {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*events.Envelope
	for _, e := range r.live {
		if e.Env.Type != typ {
			continue
		}
		if e.Subject != bus.EventSubject(rigServer, typ) {
			t.Errorf("%s event on subject %s", typ, e.Subject)
		}
		out = append(out, e.Env)
	}
	return out
}

func (r *rig) registrations(t *testing.T, typ string) []events.Registration {
	t.Helper()
	var out []events.Registration
	for _, env := range r.eventsOf(t, typ) {
		var reg events.Registration
		if err := env.Payload(&reg); err != nil {
			t.Fatal(err)
		}
		out = append(out, reg)
	}
	return out
}

func (r *rig) checkStatuses(t *testing.T) []events.CheckStatus {
	t.Helper()
	var out []events.CheckStatus
	for _, env := range r.eventsOf(t, events.TypeCheckStatus) {
		var cs events.CheckStatus
		if err := env.Payload(&cs); err != nil {
			t.Fatal(err)
		}
		out = append(out, cs)
	}
	return out
}

// closedPort returns a port on 127.0.0.1 that nobody listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// listen accepts and closes connections on 127.0.0.1 until stopped.
func listen(t *testing.T) (port int, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { l.Close(); <-done }) }
	t.Cleanup(stop)
	return l.Addr().(*net.TCPAddr).Port, stop
}

func checkByID(n consul.Node, id string) (consul.Check, bool) {
	for _, c := range n.Checks {
		if c.ID == id {
			return c, true
		}
	}
	return consul.Check{}, false
}

// heldSite is an HTTP server for http checks: it answers 200 at once, or holds
// every request while held, so that a test decides when a check's run ends.
type heldSite struct {
	*httptest.Server
	mu   sync.Mutex
	gate chan struct{} // nil: answer at once; else closed by release
}

func newHeldSite(t *testing.T) *heldSite {
	t.Helper()
	s := &heldSite{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.mu.Lock()
		gate := s.gate
		s.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-req.Context().Done():
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(s.release) // runs first: Close waits for the requests it holds
	return s
}

func (s *heldSite) hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
}

func (s *heldSite) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
}
