package lb

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/haproxy"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/containers"
	"github.com/skeinhq/skein/workers/svc"
)

const server = "s1"

// fakeAPI is haproxy's runtime API as the worker sees it: servers by backend
// and name, per socket; fail makes the next calls fail.
type fakeAPI struct {
	mu      sync.Mutex
	servers map[string]map[string]string // socket → name → host:port
	fail    error
	calls   int
}

type apiClient struct {
	f      *fakeAPI
	socket string
}

func (c apiClient) AddServer(ctx context.Context, backend, name, addr string, port int) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.f.calls++
	if c.f.fail != nil {
		return c.f.fail
	}
	m := c.f.servers[c.socket]
	if m == nil {
		m = map[string]string{}
		c.f.servers[c.socket] = m
	}
	if _, ok := m[name]; ok {
		return fmt.Errorf("haproxy: Already exists a server with the same name in backend")
	}
	m[name] = fmt.Sprintf("%s:%d", addr, port)
	return nil
}

func (c apiClient) Servers(ctx context.Context, backend string) ([]haproxy.Server, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.f.fail != nil {
		return nil, c.f.fail
	}
	var out []haproxy.Server
	for name, addr := range c.f.servers[c.socket] {
		out = append(out, haproxy.Server{Name: name, Addr: addr, State: "up"})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (c apiClient) RemoveServer(ctx context.Context, backend, name string) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.f.calls++
	if c.f.fail != nil {
		return c.f.fail
	}
	delete(c.f.servers[c.socket], name)
	return nil
}

// names are the servers haproxy runs behind a socket, sorted.
func (f *fakeAPI) names(socket string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.servers[socket] {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// rig is one server's containers and load balancer workers on an embedded
// bus, with a fake Incus whose Exec answers the apply scripts as the test says.
type rig struct {
	ctx    context.Context
	fake   *container.Fake
	api    *fakeAPI
	w      *Worker
	client *bus.Client
	store  *bus.Store[events.LB]
	conn   *bus.Conn
	keys   *seal.Keys // the agent's

	mu     sync.Mutex
	refuse string // an apply whose staged files contain this is refused by the "tool"
	live   []*events.Envelope
	// reg holds the worker's collectors.
	reg *prometheus.Registry
}

func newRig(t *testing.T) *rig {
	t.Helper()
	return newRigWith(t, nil)
}

// newRigWith is newRig with wrap, when set, between the worker and JetStream.
func newRigWith(t *testing.T, wrap func(jetstream.JetStream) jetstream.JetStream) *rig {
	t.Helper()
	conn, url := testutil.Bus(t)
	aconn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent-" + server, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{ctx: ctx, fake: container.NewFake("10.77.9.0/24", "skein-service"), api: &fakeAPI{servers: map[string]map[string]string{}},
		client: bus.NewClient(conn, "cli"), conn: conn}
	r.fake.ExecHook = r.exec
	if r.store, err = bus.OpenStore[events.LB](ctx, conn.JS); err != nil {
		t.Fatal(err)
	}
	sub, err := conn.NC.Subscribe(bus.EventFilter(server, events.TypeLBChanged), func(m *nats.Msg) {
		if env, err := events.Decode(m.Data); err == nil {
			r.mu.Lock()
			r.live = append(r.live, env)
			r.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.NC.Flush()
	cstore, err := bus.OpenStore[events.Container](ctx, aconn.JS)
	if err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(aconn.JS, "agent/"+server, server)
	cw := containers.New(server, r.fake, cstore, pub, zerolog.Nop())
	rt := workers.NewRuntime(aconn, server, zerolog.Nop())
	if r.keys, err = seal.New(); err != nil {
		t.Fatal(err)
	}
	host := &svc.Host{Server: server, Image: "skein-service", Runtime: r.fake, Containers: cw, Locks: rt, Answered: rt.Answered, Log: zerolog.Nop(), Secrets: r.keys}
	r.reg = prometheus.NewRegistry()
	js := aconn.JS
	if wrap != nil {
		js = wrap(js)
	}
	r.w, err = New(ctx, Config{Deps: svc.Deps{Host: host, JS: js, Publisher: pub, Metrics: r.reg}, Log: zerolog.Nop(),
		API: func(socket string) RuntimeAPI { return apiClient{f: r.api, socket: socket} }})
	if err != nil {
		t.Fatal(err)
	}
	cw.Register(rt)
	r.w.Register(rt)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = sub.Unsubscribe()
		aconn.Close()
	})
	return r
}

// exec answers an apply script: refused (exit 10, as the tool would) when a
// file it installs holds the rig's refuse string, applied otherwise.
func (r *rig) exec(name string, argv []string) (container.ExecResult, error) {
	r.mu.Lock()
	refuse := r.refuse
	r.mu.Unlock()
	if refuse == "" || len(argv) < 3 || argv[0] != "sh" {
		return container.ExecResult{}, nil
	}
	for _, line := range strings.Split(argv[2], "\n") {
		if !strings.HasPrefix(line, "mv -f '/tmp/skein-stage-") {
			continue
		}
		staged := strings.Trim(strings.Fields(line)[2], "'")
		if strings.Contains(string(r.fake.Files[name+":"+staged]), refuse) {
			return container.ExecResult{Code: 10, Stderr: []byte("[ALERT] config: refused " + refuse)}, nil
		}
	}
	return container.ExecResult{}, nil
}

func (r *rig) setRefuse(s string) {
	r.mu.Lock()
	r.refuse = s
	r.mu.Unlock()
}

// do sends a command and waits for its result: the load balancer, or the command's error.
func (r *rig) do(t *testing.T, typ string, payload any) (events.LB, error) {
	t.Helper()
	env, err := r.client.NewCommand(server, typ, "", payload)
	if err != nil {
		// Refused by the client: sent anyway, to see the agent refuse it too.
		env = testutil.UncheckedCommand(server, typ, payload)
	}
	return r.send(t, env)
}

func (r *rig) send(t *testing.T, env *events.Envelope) (events.LB, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	res, err := r.client.Do(ctx, bus.Call{Envelope: env})
	var ce *bus.CommandError
	if err != nil && !errors.As(err, &ce) {
		t.Fatalf("%s: %v", env.Type, err)
	}
	if err != nil {
		return events.LB{}, err
	}
	var l events.LB
	if err := json.Unmarshal(res.Output, &l); err != nil {
		t.Fatal(err)
	}
	return l, nil
}

func (r *rig) mustDo(t *testing.T, typ string, payload any) events.LB {
	t.Helper()
	l, err := r.do(t, typ, payload)
	if err != nil {
		t.Fatalf("%s %+v: %v", typ, payload, err)
	}
	return l
}

func (r *rig) record(t *testing.T, name string) *events.LB {
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

func (r *rig) socket(name string) string { return r.w.socketPath(name) }

// wantError checks a command error's code and that its message says what to do.
func wantError(t *testing.T, err error, code, says string) {
	t.Helper()
	var ce *bus.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v, want a command error %s", err, code)
	}
	if ce.Code != code || !strings.Contains(ce.Message, says) {
		t.Errorf("error = %s %q, want %s saying %q", ce.Code, ce.Message, code, says)
	}
}

func backendNames(l events.LB) []string {
	var out []string
	for _, b := range l.Backends {
		out = append(out, b.Name)
	}
	sort.Strings(out)
	return out
}

func TestAddHAProxyThenBackendsThroughTheRuntimeAPI(t *testing.T) {
	r := newRig(t)
	l := r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
	if l.Status != events.StatusReady || l.Server != server || l.Mode != "roundrobin" || l.Applied == "" {
		t.Fatalf("added = %+v", l)
	}
	if got := string(r.fake.Files["ha1:socket:/run/haproxy/admin.sock"]); got != r.socket("ha1") {
		t.Errorf("runtime API socket exposed at %q, want %q", got, r.socket("ha1"))
	}
	execs := len(r.fake.Execs)
	l = r.mustDo(t, events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "web1", Host: "10.77.1.5", Port: 80}}})
	if fmt.Sprint(backendNames(l)) != "[web1]" || fmt.Sprint(r.api.names(r.socket("ha1"))) != "[web1]" {
		t.Fatalf("record %v, haproxy %v: want web1 in both", backendNames(l), r.api.names(r.socket("ha1")))
	}
	// The files followed, checked, without a reload.
	for _, e := range r.fake.Execs[execs:] {
		if strings.Contains(e, "systemctl reload") {
			t.Errorf("a backend change reloaded haproxy: %s", e)
		}
	}
	// The same change again renders the same files: nothing runs in the container.
	execs = len(r.fake.Execs)
	r.mustDo(t, events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "web1", Host: "10.77.1.5", Port: 80}}})
	if len(r.fake.Execs) != execs {
		t.Errorf("an unchanged configuration was applied again: %v", r.fake.Execs[execs:])
	}
	l = r.mustDo(t, events.TypeLBBackendsDelete, events.LBBackendNames{LB: "ha1", Names: []string{"web1"}})
	if len(l.Backends) != 0 || len(r.api.names(r.socket("ha1"))) != 0 {
		t.Errorf("after delbackends: record %v, haproxy %v", backendNames(l), r.api.names(r.socket("ha1")))
	}
}

// TestConcurrentAddBackendsAllLand is the regression test of the lost updates:
// 20 addbackends with distinct names on one haproxy at once all end in the
// record and in haproxy's running state.
func TestConcurrentAddBackendsAllLand(t *testing.T) {
	r := newRig(t)
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.do(t, events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: fmt.Sprintf("x%d", i), Host: "10.77.1.5", Port: 8000 + i}}})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("addbackends: %v", err)
		}
	}
	rec := r.record(t, "ha1")
	running := r.api.names(r.socket("ha1"))
	if len(rec.Backends) != 20 || len(running) != 20 {
		t.Fatalf("record has %d backends, haproxy runs %d: want 20 in both", len(rec.Backends), len(running))
	}
	if fmt.Sprint(backendNames(*rec)) != fmt.Sprint(running) {
		t.Errorf("record %v differs from what haproxy runs %v", backendNames(*rec), running)
	}
}

// TestAddRedeliveredAfterATransientFailureMakesOne is the regression test of
// the duplicates: addlb without a name, failing after it reserved its name,
// is redelivered and ends with one load balancer, under the first name.
func TestAddRedeliveredAfterATransientFailureMakesOne(t *testing.T) {
	r := newRig(t)
	var once sync.Once
	r.fake.ExecHook = func(name string, argv []string) (container.ExecResult, error) {
		failed := false
		once.Do(func() { failed = true })
		if failed {
			return container.ExecResult{}, errors.New("incus: websocket closed")
		}
		return container.ExecResult{}, nil
	}
	l := r.mustDo(t, events.TypeLBAdd, events.LBAdd{Kind: "haproxy"})
	if l.Name != "haproxy-1" || l.Status != events.StatusReady {
		t.Fatalf("added %+v, want haproxy-1 ready", l)
	}
	all, err := r.store.Values(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 {
		t.Errorf("%d load balancer records after one addlb, want 1: %+v", len(all), all)
	}
	if n := r.fake.Calls["Create"]; n != 1 {
		t.Errorf("%d containers created, want 1", n)
	}
	// Two unnamed adds at once get two names.
	var wg sync.WaitGroup
	names := make(chan string, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := r.do(t, events.TypeLBAdd, events.LBAdd{Kind: "haproxy"})
			if err != nil {
				t.Errorf("addlb: %v", err)
			}
			names <- l.Name
		}()
	}
	wg.Wait()
	close(names)
	var got []string
	for n := range names {
		got = append(got, n)
	}
	sort.Strings(got)
	if fmt.Sprint(got) != "[haproxy-2 haproxy-3]" {
		t.Errorf("two unnamed adds at once named %v, want haproxy-2 and haproxy-3", got)
	}
}

// TestRefusedChangeLeavesTheRecordAndWhatRuns: a change the tool refuses is
// answered with the tool's message; the record is unchanged, and a backend
// change that went live through the runtime API is taken back.
func TestRefusedChangeLeavesTheRecordAndWhatRuns(t *testing.T) {
	r := newRig(t)
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
	r.mustDo(t, events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "web1", Host: "10.77.1.5", Port: 80}}})
	before := r.record(t, "ha1")

	r.setRefuse("server web2")
	_, err := r.do(t, events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "web2", Host: "10.77.1.6", Port: 80}}})
	wantError(t, err, workers.CodeInvalid, "refused server web2")
	if got := r.api.names(r.socket("ha1")); fmt.Sprint(got) != "[web1]" {
		t.Errorf("haproxy runs %v after a refused change, want [web1]", got)
	}
	after := r.record(t, "ha1")
	if fmt.Sprint(backendNames(*after)) != "[web1]" || after.Applied != before.Applied {
		t.Errorf("record after a refused change = %+v, want it unchanged", after)
	}

	r.setRefuse("balance leastconn")
	_, err = r.do(t, events.TypeLBSet, events.LBSet{LB: "ha1", Key: "mode", Value: "leastconn"})
	wantError(t, err, workers.CodeInvalid, "refused balance leastconn")
	if m := r.record(t, "ha1").Mode; m != "roundrobin" {
		t.Errorf("mode after a refused change = %s", m)
	}
}

// TestFailedAddLeavesNothing: a load balancer whose first configuration the
// tool refuses is undone: no record, no container.
func TestFailedAddLeavesNothing(t *testing.T) {
	r := newRig(t)
	r.setRefuse("load balancer ha1")
	_, err := r.do(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
	wantError(t, err, workers.CodeInvalid, "refused")
	if rec := r.record(t, "ha1"); rec != nil {
		t.Errorf("record left after a failed add: %+v", rec)
	}
	if _, err := r.fake.Get(r.ctx, "ha1"); !errors.Is(err, container.ErrNotFound) {
		t.Errorf("container left after a failed add: %v", err)
	}
	// The name is free again.
	r.setRefuse("")
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
}

// TestGhostIsRemovedAndTold: a load balancer whose container was deleted
// behind skein's back leaves the records, and an event says why.
func TestGhostIsRemovedAndTold(t *testing.T) {
	r := newRig(t)
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
	if err := r.fake.Stop(r.ctx, "ha1", true); err != nil {
		t.Fatal(err)
	}
	if err := r.fake.Delete(r.ctx, "ha1"); err != nil {
		t.Fatal(err)
	}
	svc.Reconcile(r.ctx, r.w.host, r.w.kind)
	if rec := r.record(t, "ha1"); rec != nil {
		t.Fatalf("ghost record kept: %+v", rec)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, env := range r.live {
			var ch events.LBChange
			if env.Payload(&ch) == nil && ch.Name == "ha1" && ch.Change == "deleted" && ch.Cause == "reconcile" {
				return true
			}
		}
		return false
	}, "no lb.changed deleted/reconcile event")
}

// TestDriftIsRepairedAndTold: a ready haproxy that runs other backends than
// its record (a command cut short between its live change and its record) is
// reloaded from the record by the reconciler, which says what it changed; one
// that runs its record is left alone.
func TestDriftIsRepairedAndTold(t *testing.T) {
	r := newRig(t)
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
	r.mustDo(t, events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "web1", Host: "10.77.1.5", Port: 80}}})
	execs := len(r.fake.Execs)
	svc.Reconcile(r.ctx, r.w.host, r.w.kind)
	if len(r.fake.Execs) != execs {
		t.Fatalf("a haproxy that runs its record was touched: %v", r.fake.Execs[execs:])
	}
	// As haproxy's "show servers state" gives it: the address without its port.
	r.runs("ha1", map[string]string{"web1": "10.77.1.5"})
	svc.Reconcile(r.ctx, r.w.host, r.w.kind)
	if len(r.fake.Execs) != execs {
		t.Fatalf("a haproxy that runs its record (address without port) was touched: %v", r.fake.Execs[execs:])
	}
	// Drift: web1 gone from haproxy, ghost added, behind the record's back.
	r.runs("ha1", map[string]string{"ghost": "10.77.9.9:80"})
	svc.Reconcile(r.ctx, r.w.host, r.w.kind)
	reloaded := false
	for _, e := range r.fake.Execs[execs:] {
		reloaded = reloaded || strings.Contains(e, "systemctl reload")
	}
	if !reloaded {
		t.Fatalf("the drifted haproxy was not reloaded from its record: %v", r.fake.Execs[execs:])
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, env := range r.live {
			var ch events.LBChange
			if env.Payload(&ch) == nil && ch.Name == "ha1" && ch.Cause == "reconcile" && fmt.Sprint(ch.Added) == "[web1]" && fmt.Sprint(ch.Removed) == "[ghost]" {
				return true
			}
		}
		return false
	}, "no lb.changed event naming the repair (added web1, removed ghost)")
	if rec := r.record(t, "ha1"); rec == nil || fmt.Sprint(backendNames(*rec)) != "[web1]" {
		t.Errorf("the record changed: %+v", rec)
	}
}

// runs makes the fake haproxy of load balancer lb run servers (name → address).
func (r *rig) runs(lb string, servers map[string]string) {
	r.api.mu.Lock()
	defer r.api.mu.Unlock()
	r.api.servers[r.socket(lb)] = servers
}

func TestBadInputIsRefusedWithTheFix(t *testing.T) {
	r := newRig(t)
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ng1", Kind: "nginx", URL: "site.test", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}})
	certA, _ := pair(t, "a.test")
	_, keyB := pair(t, "b.test")
	sealedB, err := seal.To(r.keys.Public(), []byte(keyB))
	if err != nil {
		t.Fatal(err)
	}
	certC, keyC := pair(t, "c.test")
	other, _ := seal.New()
	sealedElsewhere, err := seal.To(other.Public(), []byte(keyC))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		typ     string
		payload any
		code    string
		says    string
	}{
		{"nginx without a URL", events.TypeLBAdd, events.LBAdd{Name: "ng2", Kind: "nginx", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}}, workers.CodeInvalid, "needs a URL and at least one backend"},
		{"URL on haproxy", events.TypeLBAdd, events.LBAdd{Name: "ha2", Kind: "haproxy", URL: "x.test"}, workers.CodeInvalid, "-u and -b are for nginx"},
		{"taken name", events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"}, workers.CodeConflict, "pick another name with -n"},
		{"certificate of another key", events.TypeLBAdd, events.LBAdd{Name: "ha3", Kind: "haproxy", TLS: &events.TLSPair{Cert: certA, Key: sealedB}}, workers.CodeInvalid, "do not make a pair"},
		{"key sealed for another server", events.TypeLBAdd, events.LBAdd{Name: "ha4", Kind: "haproxy", TLS: &events.TLSPair{Cert: certC, Key: sealedElsewhere}}, workers.CodeInvalid, "sealed for another key"},
		{"key not sealed at all", events.TypeLBAdd, events.LBAdd{Name: "ha5", Kind: "haproxy", TLS: &events.TLSPair{Cert: certC}}, workers.CodeInvalid, "nothing sealed"},
		{"unknown load balancer", events.TypeLBBackendsAdd, events.LBBackends{LB: "nope", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}}, workers.CodeNotFound, "`skein listlbs` shows them"},
		{"nginx mode on haproxy", events.TypeLBSet, events.LBSet{LB: "ha1", Key: "mode", Value: "ip_hash"}, workers.CodeInvalid, "use roundrobin, leastconn, source"},
		{"haproxy mode on nginx", events.TypeLBSet, events.LBSet{LB: "ng1", Key: "mode", Value: "leastconn"}, workers.CodeInvalid, "use default, ip_hash, least_conn"},
		{"url on haproxy", events.TypeLBSet, events.LBSet{LB: "ha1", Key: "url", Value: "x.test"}, workers.CodeInvalid, "url is for nginx ones"},
		{"url that is not a host name", events.TypeLBSet, events.LBSet{LB: "ng1", Key: "url", Value: "evil.test; location /pwn"}, workers.CodeInvalid, "want a host name"},
		{"resolver with a new line", events.TypeLBSet, events.LBSet{LB: "ha1", Key: "resolvers", Value: "10.77.1.10:53\n  program x"}, workers.CodeInvalid, "is not printable characters on one line"},
		{"resolver that is no address", events.TypeLBSet, events.LBSet{LB: "ha1", Key: "resolvers", Value: "10.77.1.10:53 program x"}, workers.CodeInvalid, "want IP:PORT"},
		{"workers out of range", events.TypeLBSet, events.LBSet{LB: "ha1", Key: "workers", Value: "0"}, workers.CodeInvalid, "a number from 1 to 64"},
		{"Consul name without an endpoint", events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "wp", Host: "wp.service.consul", Port: 80}}}, workers.CodeInvalid, "add one with `skein addep SERVER IP`"},
		{"second backend beside a Consul name on nginx", events.TypeLBAdd, events.LBAdd{Name: "ng3", Kind: "nginx", URL: "x.test", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}, {Name: "b", Host: "x.service.consul", Port: 80}}}, workers.CodeInvalid, "add one with `skein addep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := r.store.List(r.ctx)
			_, err := r.do(t, tc.typ, tc.payload)
			wantError(t, err, tc.code, tc.says)
			after, _ := r.store.List(r.ctx)
			if fmt.Sprint(before) != fmt.Sprint(after) {
				t.Errorf("records changed by a refused command:\n%v\n%v", before, after)
			}
		})
	}
}

// pair makes a self-signed certificate for host and its key, in PEM.
func pair(t *testing.T, host string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}))
}

// TestTLSKeyIsSealedEverywhereButTheContainer: a key sent sealed reaches the
// load balancer's container, and is in clear in no record, event, result or
// journal entry on the bus.
func TestTLSKeyIsSealedEverywhereButTheContainer(t *testing.T) {
	r := newRig(t)
	cert, key := pair(t, "secure.test")
	body := strings.Split(key, "\n")[1] // a line of the key's base64
	// Everything that crosses the bus while the key travels, as it travels:
	// the command stream is a work queue and forgets a command once it is done.
	var mu sync.Mutex
	var leaks []string
	sub, err := r.conn.NC.Subscribe(">", func(m *nats.Msg) {
		if strings.Contains(string(m.Data), body) {
			mu.Lock()
			leaks = append(leaks, m.Subject)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	sealed, err := seal.To(r.keys.Public(), []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy", TLS: &events.TLSPair{Cert: cert, Key: sealed}})
	cert2, key2 := pair(t, "secure.test")
	sealed2, _ := seal.To(r.keys.Public(), []byte(key2))
	r.mustDo(t, events.TypeLBSet, events.LBSet{LB: "ha1", Key: "ssl", TLS: &events.TLSPair{Cert: cert2, Key: sealed2}})
	_ = r.conn.NC.Flush()
	mu.Lock()
	if len(leaks) > 0 {
		t.Errorf("the key crossed the bus in clear on %v", leaks)
	}
	mu.Unlock()
	found := false
	for path, data := range r.fake.Files {
		if strings.Contains(string(data), body) {
			found = strings.HasPrefix(path, "ha1:/tmp/skein-stage-")
		}
	}
	if !found {
		t.Fatal("the key never reached the container")
	}
	ctx := r.ctx
	for _, name := range []string{bus.StreamCommands, bus.StreamResults, bus.StreamEvents, "KV_skein_lbs", "KV_skein_journal", "KV_skein_containers"} {
		st, err := r.conn.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				continue
			}
			if strings.Contains(string(m.Data), body) {
				t.Errorf("the key is in clear in %s, message %d on %s", name, seq, m.Subject)
			}
		}
	}
}

// TestBackendStatesCollected: each haproxy backend with its state as the
// runtime API gives it, at each scrape; a runtime API that does not answer
// is counted, not guessed.
func TestBackendStatesCollected(t *testing.T) {
	r := newRig(t)
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
	r.mustDo(t, events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "web1", Host: "10.77.1.5", Port: 80}, {Name: "web2", Host: "10.77.1.6", Port: 80}}})
	want := `
# HELP skein_lb_backend_state 1 for each backend of this server's haproxy load balancers, labelled with its state as haproxy runs it (up, down, starting, stopping, maint, drain).
# TYPE skein_lb_backend_state gauge
skein_lb_backend_state{backend="web1",lb="ha1",server="s1",state="up"} 1
skein_lb_backend_state{backend="web2",lb="ha1",server="s1",state="up"} 1
# HELP skein_lb_runtime_errors haproxy load balancers of this server whose runtime API did not answer this scrape.
# TYPE skein_lb_runtime_errors gauge
skein_lb_runtime_errors{server="s1"} 0
`
	if err := promtest.GatherAndCompare(r.reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	r.api.mu.Lock()
	r.api.fail = errors.New("socket gone")
	r.api.mu.Unlock()
	if err := promtest.GatherAndCompare(r.reg, strings.NewReader(`
# HELP skein_lb_runtime_errors haproxy load balancers of this server whose runtime API did not answer this scrape.
# TYPE skein_lb_runtime_errors gauge
skein_lb_runtime_errors{server="s1"} 1
`), "skein_lb_runtime_errors", "skein_lb_backend_state"); err != nil {
		t.Error(err)
	}
}

// TestBackendsWhoseRecordLandedAreTold (found by the NATS-cluster soak in
// CI: "missed event: command 26 (addbackends soaklb2 b2) succeeded and the
// observer saw no change"): an addbackends whose first attempt's record
// landed but whose answer was lost (its agent cut from the bus) is told
// by the next attempt as that one would have: lb.changed naming b2 added;
// a delbackends likewise, naming b1 removed.
func TestBackendsWhoseRecordLandedAreTold(t *testing.T) {
	armed := &atomic.Bool{}
	r := newRigWith(t, func(js jetstream.JetStream) jetstream.JetStream { return testutil.LostAck(js, "skein_lbs", armed) })
	r.mustDo(t, events.TypeLBAdd, events.LBAdd{Name: "ha1", Kind: "haproxy"})
	r.mustDo(t, events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "b1", Host: "10.77.9.10", Port: 80}}})
	told := func(change func(events.LBChange) bool) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, env := range r.live {
			var ch events.LBChange
			if env.Payload(&ch) == nil && change(ch) {
				return true
			}
		}
		return false
	}
	armed.Store(true)
	r.mustDo(t, events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "b2", Host: "10.77.9.11", Port: 80}}})
	if armed.Load() {
		t.Fatal("the addition's record write never lost its acknowledgement: the test did not test")
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		return told(func(ch events.LBChange) bool { return slices.Contains(ch.Added, "b2") })
	}, "no lb.changed naming b2 added")
	armed.Store(true)
	r.mustDo(t, events.TypeLBBackendsDelete, events.LBBackendNames{LB: "ha1", Names: []string{"b1"}})
	if armed.Load() {
		t.Fatal("the removal's record write never lost its acknowledgement: the test did not test")
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		return told(func(ch events.LBChange) bool { return slices.Contains(ch.Removed, "b1") })
	}, "no lb.changed naming b1 removed")
}
