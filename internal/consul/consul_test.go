package consul

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// fakeNode is one node of the fake catalog.
type fakeNode struct {
	address  string
	meta     map[string]string
	services map[string]*api.AgentService // by service ID
	checks   map[string]*api.HealthCheck  // by check ID
}

// fakeRegister is the body of PUT /v1/catalog/register as Consul 1.8 knows it;
// the fake refuses any other field, as an older Consul would.
type fakeRegister struct {
	Node     string
	Address  string
	NodeMeta map[string]string
	Service  *struct {
		ID      string
		Service string
		Address string
		Port    int
		Tags    []string
	}
	Checks []struct {
		Node       string
		CheckID    string
		Name       string
		Status     string
		Output     string
		ServiceID  string
		Definition map[string]string
	}
	SkipNodeUpdate bool
}

// fakeConsul is an in-memory Consul HTTP API with only the endpoints the
// adapter calls; unknown paths answer 404 so a drift shows.
type fakeConsul struct {
	srv *httptest.Server

	mu     sync.Mutex
	nodes  map[string]*fakeNode
	leader string
	raft   []*api.RaftServer
	// history holds, after every catalog write, the "node/service" pairs then registered.
	history [][]string
	// hold, when set, blocks every request until the test ends (a hung endpoint).
	hold bool
	// requests counts the requests received.
	requests int
}

// newFakeConsul starts a fake Consul endpoint, closed when the test ends.
func newFakeConsul(t *testing.T) *fakeConsul {
	t.Helper()
	f := &fakeConsul{nodes: map[string]*fakeNode{}}
	done := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/catalog/register", f.register)
	mux.HandleFunc("PUT /v1/catalog/deregister", f.deregister)
	mux.HandleFunc("GET /v1/catalog/node/{node}", f.catalogNode)
	mux.HandleFunc("GET /v1/catalog/nodes", f.catalogNodes)
	mux.HandleFunc("GET /v1/catalog/services", f.catalogServices)
	mux.HandleFunc("GET /v1/health/node/{node}", f.healthNode)
	mux.HandleFunc("GET /v1/health/service/{service}", f.healthService)
	mux.HandleFunc("GET /v1/status/leader", func(w http.ResponseWriter, r *http.Request) { reply(w, f.leader) })
	mux.HandleFunc("GET /v1/operator/raft/configuration", func(w http.ResponseWriter, r *http.Request) {
		reply(w, api.RaftConfiguration{Servers: f.raft, Index: 1})
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests++
		hold := f.hold
		f.mu.Unlock()
		if hold {
			select {
			case <-done:
			case <-r.Context().Done():
			}
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { close(done); f.srv.Close() })
	return f
}

// set changes the fake's state under its lock.
func (f *fakeConsul) set(change func(f *fakeConsul)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// addr is the fake's host:port.
func (f *fakeConsul) addr() string { return f.srv.Listener.Addr().String() }

// requestCount returns how many requests reached the fake.
func (f *fakeConsul) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// reply writes v as JSON with the headers Consul sets on reads.
func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Consul-Index", "1")
	w.Header().Set("X-Consul-KnownLeader", "true")
	w.Header().Set("X-Consul-LastContact", "0")
	_ = json.NewEncoder(w).Encode(v)
}

// register handles PUT /v1/catalog/register (f.mu held).
func (f *fakeConsul) register(w http.ResponseWriter, r *http.Request) {
	var req fakeRegister
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "Request decode failed: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.Node == "" {
		http.Error(w, "Must provide node", http.StatusBadRequest)
		return
	}
	if req.Address == "" {
		http.Error(w, "Must provide address", http.StatusBadRequest)
		return
	}
	// SkipNodeUpdate keeps an existing node's address and meta.
	n := f.nodes[req.Node]
	if n == nil {
		n = &fakeNode{services: map[string]*api.AgentService{}, checks: map[string]*api.HealthCheck{}}
		f.nodes[req.Node] = n
		n.address, n.meta = req.Address, maps(req.NodeMeta)
	} else if !req.SkipNodeUpdate {
		n.address, n.meta = req.Address, maps(req.NodeMeta)
	}
	if s := req.Service; s != nil {
		id := s.ID
		if id == "" {
			id = s.Service
		}
		n.services[id] = &api.AgentService{ID: id, Service: s.Service, Address: s.Address, Port: s.Port, Tags: s.Tags}
	}
	for _, c := range req.Checks {
		id := c.CheckID
		if id == "" {
			id = c.Name
		}
		status := c.Status
		if status == "" {
			status = api.HealthCritical
		}
		hc := &api.HealthCheck{Node: req.Node, CheckID: id, Name: c.Name, Status: status, Output: c.Output, ServiceID: c.ServiceID}
		if s := n.services[c.ServiceID]; s != nil {
			hc.ServiceName = s.Service
		}
		n.checks[id] = hc
	}
	f.snapshot()
	reply(w, true)
}

// deregister handles PUT /v1/catalog/deregister (f.mu held).
func (f *fakeConsul) deregister(w http.ResponseWriter, r *http.Request) {
	var req api.CatalogDeregistration
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "Request decode failed: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.Node == "" {
		http.Error(w, "Must provide node", http.StatusBadRequest)
		return
	}
	if n := f.nodes[req.Node]; n != nil {
		switch {
		case req.ServiceID != "":
			delete(n.services, req.ServiceID)
			for id, c := range n.checks {
				if c.ServiceID == req.ServiceID {
					delete(n.checks, id)
				}
			}
		case req.CheckID != "":
			delete(n.checks, req.CheckID)
		default:
			delete(f.nodes, req.Node)
		}
	}
	f.snapshot()
	reply(w, true)
}

// snapshot appends the registered node/service pairs to the history (f.mu held).
func (f *fakeConsul) snapshot() {
	var s []string
	for name, n := range f.nodes {
		for id := range n.services {
			s = append(s, name+"/"+id)
		}
	}
	sort.Strings(s)
	f.history = append(f.history, s)
}

// apiNode is n as the API reports a node.
func apiNode(name string, n *fakeNode) *api.Node {
	return &api.Node{ID: "id-" + name, Node: name, Address: n.address, Datacenter: "dc1", Meta: maps(n.meta)}
}

// catalogNode handles GET /v1/catalog/node/{node}: null for an unknown node, as Consul answers.
func (f *fakeConsul) catalogNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("node")
	n := f.nodes[name]
	if n == nil {
		reply(w, nil)
		return
	}
	reply(w, api.CatalogNode{Node: apiNode(name, n), Services: n.services})
}

// catalogNodes handles GET /v1/catalog/nodes with its node-meta=key:value filters.
func (f *fakeConsul) catalogNodes(w http.ResponseWriter, r *http.Request) {
	out := []*api.Node{}
	for _, name := range f.nodeNames() {
		n := f.nodes[name]
		ok := true
		for _, kv := range r.URL.Query()["node-meta"] {
			k, v, _ := strings.Cut(kv, ":")
			if got, has := n.meta[k]; !has || got != v {
				ok = false
			}
		}
		if ok {
			out = append(out, apiNode(name, n))
		}
	}
	reply(w, out)
}

// catalogServices handles GET /v1/catalog/services: service name → tags.
func (f *fakeConsul) catalogServices(w http.ResponseWriter, r *http.Request) {
	out := map[string][]string{}
	for _, n := range f.nodes {
		for _, s := range n.services {
			out[s.Service] = append(out[s.Service], s.Tags...)
		}
	}
	reply(w, out)
}

// healthNode handles GET /v1/health/node/{node}: the node's checks, [] when unknown.
func (f *fakeConsul) healthNode(w http.ResponseWriter, r *http.Request) {
	out := api.HealthChecks{}
	if n := f.nodes[r.PathValue("node")]; n != nil {
		for _, id := range sortedKeys(n.checks) {
			out = append(out, n.checks[id])
		}
	}
	reply(w, out)
}

// healthService handles GET /v1/health/service/{service}: each instance with
// its node's checks and its own.
func (f *fakeConsul) healthService(w http.ResponseWriter, r *http.Request) {
	out := []*api.ServiceEntry{}
	for _, name := range f.nodeNames() {
		n := f.nodes[name]
		for _, sid := range sortedKeys(n.services) {
			s := n.services[sid]
			if s.Service != r.PathValue("service") {
				continue
			}
			e := &api.ServiceEntry{Node: apiNode(name, n), Service: s, Checks: api.HealthChecks{}}
			for _, cid := range sortedKeys(n.checks) {
				if c := n.checks[cid]; c.ServiceID == "" || c.ServiceID == sid {
					e.Checks = append(e.Checks, c)
				}
			}
			out = append(out, e)
		}
	}
	reply(w, out)
}

// nodeNames returns the catalog's node names, sorted (f.mu held).
func (f *fakeConsul) nodeNames() []string { return sortedKeys(f.nodes) }

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// maps copies a string map, never returning nil.
func maps(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// node returns a copy of the fake's node name, nil when absent.
func (f *fakeConsul) node(name string) *fakeNode {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[name]
	if n == nil {
		return nil
	}
	c := &fakeNode{address: n.address, meta: maps(n.meta), services: map[string]*api.AgentService{}, checks: map[string]*api.HealthCheck{}}
	for k, v := range n.services {
		s := *v
		c.services[k] = &s
	}
	for k, v := range n.checks {
		ch := *v
		c.checks[k] = &ch
	}
	return c
}

// fakeHistory returns the node/service pairs registered after each write.
func (f *fakeConsul) fakeHistory() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.history)
}

// failing starts an endpoint that answers every request 500 as a Consul
// without a leader does, and counts them.
func failing(t *testing.T) (addr string, count func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		http.Error(w, "rpc error making call: No cluster leader", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// closedPort returns a 127.0.0.1 address on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// static returns an addrs function reporting a fresh copy of addrs.
func static(addrs ...string) func() []string {
	return func() []string { return slices.Clone(addrs) }
}

// testCtx is a context that ends with the test or after d.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// web is a container node with a web service and a passing TCP check.
func web(name, addr string) Node {
	return Node{
		Name:    name,
		Address: addr,
		Meta:    map[string]string{MetaExternal: "true", MetaServer: "s1", MetaKind: "container"},
		Services: []Service{
			{Name: "web", Port: 80, Tags: []string{"v1"}},
			{Name: "metrics", Port: 9100},
		},
		Checks: []Check{{ID: "tcp", Name: "tcp 80", Status: api.HealthPassing, TCP: addr + ":80", Interval: "2s", Timeout: "1s"}},
	}
}

func TestRegisterThenNodes(t *testing.T) {
	f := newFakeConsul(t)
	c := New(static(f.addr()))
	ctx := testCtx(t, 10*time.Second)
	if err := c.Register(ctx, web("c1", "10.1.0.5")); err != nil {
		t.Fatal(err)
	}
	other := web("c2", "10.1.0.6")
	other.Meta = map[string]string{MetaExternal: "true", MetaServer: "s2", MetaKind: "container"}
	if err := c.Register(ctx, other); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		meta map[string]string
		want []string
	}{
		{"one key", map[string]string{MetaServer: "s1"}, []string{"c1"}},
		{"two keys", map[string]string{MetaServer: "s2", MetaKind: "container"}, []string{"c2"}},
		{"shared key", map[string]string{MetaExternal: "true"}, []string{"c1", "c2"}},
		{"no match", map[string]string{MetaServer: "s3"}, nil},
		{"no filter", nil, []string{"c1", "c2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Nodes(ctx, tt.meta)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for n := range got {
				names = append(names, n)
			}
			slices.Sort(names)
			if !slices.Equal(names, tt.want) && len(names)+len(tt.want) > 0 {
				t.Fatalf("Nodes(%v) = %q, want %q", tt.meta, names, tt.want)
			}
		})
	}
	n := f.node("c1")
	if n.address != "10.1.0.5" || len(n.services) != 2 || n.services["web"].Port != 80 || n.checks["tcp"].Status != api.HealthPassing {
		t.Errorf("catalog holds %+v", n)
	}
}

func TestRegisterReplacesServicesAndChecks(t *testing.T) {
	f := newFakeConsul(t)
	c := New(static(f.addr()))
	ctx := testCtx(t, 10*time.Second)
	first := web("c1", "10.1.0.5")
	first.Checks = append(first.Checks, Check{ID: "http", Name: "http /", Status: api.HealthPassing, HTTP: "http://10.1.0.5/"})
	if err := c.Register(ctx, first); err != nil {
		t.Fatal(err)
	}
	next := Node{
		Name: "c1", Address: "10.1.0.5", Meta: first.Meta,
		Services: []Service{{Name: "web", Port: 8080, Tags: []string{"v2"}}, {Name: "admin", Port: 9000}},
		Checks:   []Check{{ID: "tcp", Name: "tcp 8080", Status: api.HealthCritical, Output: "refused"}},
	}
	start := len(f.fakeHistory())
	if err := c.Register(ctx, next); err != nil {
		t.Fatal(err)
	}
	n := f.node("c1")
	if got := sortedKeys(n.services); !slices.Equal(got, []string{"admin", "web"}) {
		t.Errorf("services %q, want admin and web (metrics gone)", got)
	}
	if s := n.services["web"]; s.Port != 8080 || !slices.Equal(s.Tags, []string{"v2"}) {
		t.Errorf("web = %+v, want port 8080 tags [v2]", s)
	}
	if got := sortedKeys(n.checks); !slices.Equal(got, []string{"tcp"}) {
		t.Errorf("checks %q, want only tcp (http gone)", got)
	}
	if ch := n.checks["tcp"]; ch.Status != api.HealthCritical || ch.Output != "refused" {
		t.Errorf("tcp check %+v", ch)
	}
	// The service kept across the change never leaves the catalog (no DNS blink).
	for i, s := range f.fakeHistory()[start:] {
		if !slices.Contains(s, "c1/web") {
			t.Errorf("after write %d of the re-registration c1/web was gone: %q", i, s)
		}
	}
}

func TestUpdateChecks(t *testing.T) {
	f := newFakeConsul(t)
	c := New(static(f.addr()))
	ctx := testCtx(t, 10*time.Second)
	if err := c.Register(ctx, web("c1", "10.1.0.5")); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateChecks(ctx, "c1", "10.1.0.5", []Check{{ID: "tcp", Name: "tcp 80", Status: api.HealthCritical, Output: "connection refused"}}); err != nil {
		t.Fatal(err)
	}
	n := f.node("c1")
	if ch := n.checks["tcp"]; ch.Status != api.HealthCritical || ch.Output != "connection refused" {
		t.Errorf("tcp check %+v, want critical", ch)
	}
	if len(n.services) != 2 || n.meta[MetaServer] != "s1" {
		t.Errorf("UpdateChecks changed the node: %+v", n)
	}
	entries, err := c.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Health != api.HealthCritical {
			t.Errorf("%s on %s is %s, want critical", e.Service, e.Node, e.Health)
		}
	}
}

func TestDeregister(t *testing.T) {
	f := newFakeConsul(t)
	c := New(static(f.addr()))
	ctx := testCtx(t, 10*time.Second)
	for _, n := range []Node{web("c1", "10.1.0.5"), web("c2", "10.1.0.6")} {
		if err := c.Register(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Deregister(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	nodes, err := c.Nodes(ctx, map[string]string{MetaServer: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sortedKeys(nodes), []string{"c2"}) {
		t.Errorf("nodes after Deregister(c1): %q", nodes)
	}
	entries, err := c.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Node == "c1" {
			t.Errorf("entry of a deregistered node: %+v", e)
		}
	}
	// Deregistering what is already gone is not an error.
	if err := c.Deregister(ctx, "c1"); err != nil {
		t.Errorf("second Deregister: %v", err)
	}
}

func TestEntries(t *testing.T) {
	f := newFakeConsul(t)
	c := New(static(f.addr()))
	ctx := testCtx(t, 10*time.Second)
	sick := web("c2", "10.1.0.6")
	sick.Services = sick.Services[:1]
	sick.Checks = []Check{
		{ID: "tcp", Name: "tcp 80", Status: api.HealthPassing},
		{ID: "http", Name: "http /", Status: api.HealthCritical, Output: "HTTP 500"},
	}
	for _, n := range []Node{web("c1", "10.1.0.5"), sick} {
		if err := c.Register(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Service: "metrics", Node: "c1", Address: "10.1.0.5", Port: 9100, Health: api.HealthPassing,
			Checks: []CheckEntry{{Name: "tcp 80", Status: api.HealthPassing}}},
		{Service: "web", Node: "c1", Address: "10.1.0.5", Port: 80, Tags: []string{"v1"}, Health: api.HealthPassing,
			Checks: []CheckEntry{{Name: "tcp 80", Status: api.HealthPassing}}},
		{Service: "web", Node: "c2", Address: "10.1.0.6", Port: 80, Tags: []string{"v1"}, Health: api.HealthCritical,
			Checks: []CheckEntry{{Name: "http /", Status: api.HealthCritical, Output: "HTTP 500"}, {Name: "tcp 80", Status: api.HealthPassing}}},
	}
	if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); g != w {
		t.Errorf("Entries\n got %s\nwant %s", g, w)
	}
}

func TestEntriesEmptyCatalog(t *testing.T) {
	f := newFakeConsul(t)
	got, err := New(static(f.addr())).Entries(testCtx(t, 10*time.Second))
	if err != nil || len(got) != 0 {
		t.Fatalf("Entries = %v, %v; want none", got, err)
	}
}

func TestFailover(t *testing.T) {
	tests := []struct {
		name string
		down func(t *testing.T) string
	}{
		{"closed port", closedPort},
		{"500", func(t *testing.T) string { a, _ := failing(t); return a }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeConsul(t)
			c := New(static(tt.down(t), f.addr()))
			ctx := testCtx(t, 10*time.Second)
			if err := c.Register(ctx, web("c1", "10.1.0.5")); err != nil {
				t.Fatalf("Register: %v", err)
			}
			if err := c.UpdateChecks(ctx, "c1", "10.1.0.5", []Check{{ID: "tcp", Name: "tcp 80", Status: api.HealthCritical}}); err != nil {
				t.Fatalf("UpdateChecks: %v", err)
			}
			if nodes, err := c.Nodes(ctx, map[string]string{MetaServer: "s1"}); err != nil || !slices.Equal(sortedKeys(nodes), []string{"c1"}) {
				t.Fatalf("Nodes = %q, %v", nodes, err)
			}
			if entries, err := c.Entries(ctx); err != nil || len(entries) != 2 {
				t.Fatalf("Entries = %+v, %v", entries, err)
			}
			if err := c.Deregister(ctx, "c1"); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
			if f.node("c1") != nil {
				t.Error("c1 still registered")
			}
		})
	}
}

func TestFailoverPrefersTheEndpointThatAnswered(t *testing.T) {
	bad, count := failing(t)
	f := newFakeConsul(t)
	c := New(static(bad, f.addr()))
	ctx := testCtx(t, 10*time.Second)
	for i := 0; i < 3; i++ {
		if _, err := c.Nodes(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(); n != 1 {
		t.Errorf("the failing endpoint got %d requests, want 1: the one that answered goes first", n)
	}
}

func TestAllEndpointsDown(t *testing.T) {
	down := closedPort(t)
	bad, _ := failing(t)
	c := New(static(down, bad))
	_, err := c.Nodes(testCtx(t, 10*time.Second), nil)
	if err == nil {
		t.Fatal("Nodes succeeded with every endpoint down")
	}
	for _, s := range []string{"no consul endpoint answered", down, bad, "No cluster leader"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func TestNoEndpoint(t *testing.T) {
	c := New(static())
	if err := c.Register(testCtx(t, 10*time.Second), web("c1", "10.1.0.5")); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("err = %v, want ErrNoEndpoint", err)
	}
}

func TestLeader(t *testing.T) {
	tests := []struct {
		name, leader string
	}{
		{"elected", "10.0.0.1:8300"},
		{"none", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeConsul(t)
			f.set(func(f *fakeConsul) { f.leader = tt.leader })
			got, err := Leader(testCtx(t, 10*time.Second), f.addr())
			if err != nil || got != tt.leader {
				t.Fatalf("Leader = %q, %v; want %q", got, err, tt.leader)
			}
		})
	}
	t.Run("500", func(t *testing.T) {
		bad, _ := failing(t)
		if _, err := Leader(testCtx(t, 10*time.Second), bad); err == nil || !strings.Contains(err.Error(), "No cluster leader") {
			t.Fatalf("err = %v, want the endpoint's answer", err)
		}
	})
}

func TestVoters(t *testing.T) {
	f := newFakeConsul(t)
	f.set(func(f *fakeConsul) {
		f.raft = []*api.RaftServer{
			{ID: "3", Node: "consul-s3", Address: "10.0.0.3:8300", Voter: true},
			{ID: "1", Node: "consul-s1", Address: "10.0.0.1:8300", Leader: true, Voter: true},
			{ID: "4", Node: "consul-s4", Address: "10.0.0.4:8300", Voter: false},
			{ID: "2", Node: "consul-s2", Address: "10.0.0.2:8300", Voter: true},
		}
	})
	got, err := Voters(testCtx(t, 10*time.Second), f.addr(), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"consul-s1", "consul-s2", "consul-s3"}; !slices.Equal(got, want) {
		t.Errorf("Voters = %q, want %q (sorted, non-voter left out)", got, want)
	}
	bad, _ := failing(t)
	if _, err := Voters(testCtx(t, 10*time.Second), bad, ""); err == nil {
		t.Error("Voters succeeded against a failing endpoint")
	}
}
func TestLeaderHonoursDeadline(t *testing.T) {
	f := newFakeConsul(t)
	f.set(func(f *fakeConsul) { f.hold = true })
	const wait = 200 * time.Millisecond
	start := time.Now()
	_, err := Leader(testCtx(t, wait), f.addr())
	if err == nil {
		t.Fatal("Leader answered from a hung endpoint")
	}
	// Leader's own HTTP timeout is 3 s: returning well before means ctx ruled.
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("returned after %s, ctx deadline was %s", elapsed, wait)
	}
}
func TestFailoverKeepsCallersAddresses(t *testing.T) {
	addrs := []string{closedPort(t), newFakeConsul(t).addr()}
	orig := slices.Clone(addrs)
	c := New(func() []string { return addrs })
	ctx := testCtx(t, 10*time.Second)
	for i := 0; i < 2; i++ {
		if _, err := c.Nodes(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(addrs, orig) {
		t.Errorf("the client reordered the caller's addresses: %q, was %q", addrs, orig)
	}
}
