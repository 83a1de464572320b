// Package discovery runs service discovery on one server: Consul endpoints in
// containers, the services and checks containers publish while they run, the
// checks themselves, and DNS forwarding of the consul domain on the server's
// bridge. Containers are published as catalog nodes, so every endpoint answers
// for them and losing one endpoint loses nothing.
package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/containers"
)

// followed is the number of buckets the worker follows (Run's watches).
const followed = 4

// Ports of an endpoint.
const (
	// HTTPPort serves Consul's API and UI.
	HTTPPort = 8500
	// DNSPort serves Consul's DNS.
	DNSPort = 8600
)

// resyncEvery bounds how long the catalog can differ from skein's state.
const resyncEvery = 15 * time.Second

// Catalog is what the worker needs of the Consul endpoints.
type Catalog interface {
	// Register writes a node with its services and checks, replacing what it had.
	Register(ctx context.Context, n consul.Node) error
	// UpdateChecks writes the check statuses of a registered node.
	UpdateChecks(ctx context.Context, node, address string, checks []consul.Check) error
	// Deregister removes a node.
	Deregister(ctx context.Context, node string) error
	// Nodes lists the nodes whose meta matches.
	Nodes(ctx context.Context, meta map[string]string) ([]string, error)
	// NodeChecks lists the nodes whose meta matches with their address and
	// their checks as the catalog has them (status, output, definition).
	NodeChecks(ctx context.Context, meta map[string]string) ([]consul.Node, error)
}

var _ Catalog = (*consul.Client)(nil)

// Config configures the discovery worker of one server.
type Config struct {
	// Server is the server's name.
	Server string
	// Image is the image endpoints run from.
	Image string
	// Runtime is the server's container runtime.
	Runtime container.Runtime
	// Containers launches and deletes endpoint containers.
	Containers *containers.Worker
	// Publisher publishes the worker's events.
	Publisher *bus.Publisher
	// Log is the worker's logger.
	Log zerolog.Logger
	// Catalog overrides the Consul catalog client (tests); nil uses the endpoints.
	Catalog Catalog
}

// Worker is the discovery worker of one server.
type Worker struct {
	cfg       Config
	endpoints jetstream.KeyValue
	services  jetstream.KeyValue
	ctrs      jetstream.KeyValue
	adhoc     jetstream.KeyValue
	catalog   Catalog

	mu      sync.Mutex
	eps     map[string]events.Endpoint
	defs    map[string]events.Definitions
	cts     map[string]events.Container
	ads     map[string]events.Adhoc
	applied map[string]string           // node → fingerprint of what the catalog has
	status  map[string]string           // node → check statuses the catalog has
	told    map[string][]consul.Service // node → services announced as registered
	checks  map[string]*checkState
	loaded  map[string]bool       // buckets whose values the followers have all read
	seeded  bool                  // the catalog's check statuses were read once
	known   map[string]knownCheck // container/check → as the catalog had it at start
	dns     string                // forwarding last set on the bridge
	poke    chan struct{}
}

// New returns the discovery worker; js gives it its buckets.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Worker, error) {
	w := &Worker{cfg: cfg, eps: map[string]events.Endpoint{}, defs: map[string]events.Definitions{}, cts: map[string]events.Container{}, ads: map[string]events.Adhoc{},
		applied: map[string]string{}, status: map[string]string{}, told: map[string][]consul.Service{}, checks: map[string]*checkState{}, loaded: map[string]bool{}, poke: make(chan struct{}, 1), dns: "\x00"}
	var err error
	if w.endpoints, err = js.KeyValue(ctx, bus.BucketEndpoints); err != nil {
		return nil, err
	}
	if w.services, err = js.KeyValue(ctx, bus.BucketServices); err != nil {
		return nil, err
	}
	if w.ctrs, err = js.KeyValue(ctx, bus.BucketContainers); err != nil {
		return nil, err
	}
	if w.adhoc, err = js.KeyValue(ctx, bus.BucketAdhoc); err != nil {
		return nil, err
	}
	w.catalog = cfg.Catalog
	if w.catalog == nil {
		w.catalog = consul.New(w.endpointAddrs)
	}
	return w, nil
}

// Register adds the worker's handlers to the runtime, in one visible block.
func (w *Worker) Register(r *workers.Runtime) {
	r.Handle(events.TypeEndpointAdd, w.AddEndpoint)
	r.Handle(events.TypeEndpointDelete, w.DeleteEndpoint)
	r.Handle(events.TypeServiceAdd, w.AddService)
	r.Handle(events.TypeServiceDelete, w.DeleteService)
	r.Handle(events.TypeCheckAdd, w.AddCheck)
	r.Handle(events.TypeCheckDelete, w.DeleteCheck)
	r.Handle(events.TypePublish, w.Publish)
	r.Handle(events.TypeUnpublish, w.Unpublish)
}

// endpointAddrs are the HTTP addresses of the ready endpoints.
func (w *Worker) endpointAddrs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, e := range w.eps {
		if e.Status == events.EndpointReady {
			out = append(out, fmt.Sprintf("%s:%d", e.IP, HTTPPort))
		}
	}
	sort.Strings(out)
	return out
}

func (w *Worker) kick() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// Run keeps the catalog, the checks and DNS forwarding in step with skein's
// state until ctx ends: it follows the endpoints, definitions and container
// records as they change, and resyncs now and then.
func (w *Worker) Run(ctx context.Context) {
	go w.watch(ctx, w.endpoints, func(key string, val []byte) {
		if val == nil {
			delete(w.eps, key)
			return
		}
		var e events.Endpoint
		if json.Unmarshal(val, &e) == nil {
			w.eps[key] = e
		}
	})
	go w.watch(ctx, w.services, func(key string, val []byte) {
		var d events.Definitions
		if val == nil || json.Unmarshal(val, &d) != nil || d.Server != w.cfg.Server {
			delete(w.defs, key)
			return
		}
		w.defs[key] = d
	})
	go w.watch(ctx, w.ctrs, func(key string, val []byte) {
		var c events.Container
		if val == nil || json.Unmarshal(val, &c) != nil || c.Server != w.cfg.Server {
			delete(w.cts, key)
			return
		}
		w.cts[key] = c
	})
	go w.watch(ctx, w.adhoc, func(key string, val []byte) {
		var a events.Adhoc
		if val == nil || json.Unmarshal(val, &a) != nil || a.Server != w.cfg.Server {
			delete(w.ads, key)
			return
		}
		w.ads[key] = a
	})
	go w.runChecks(ctx)
	tick := time.NewTicker(resyncEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.poke:
			w.sync(ctx, false)
		case <-tick.C:
			w.sync(ctx, true)
		}
	}
}

// watch follows a bucket, applying each change under the lock and poking the sync.
func (w *Worker) watch(ctx context.Context, kv jetstream.KeyValue, apply func(key string, val []byte)) {
	for ctx.Err() == nil {
		wt, err := kv.WatchAll(ctx)
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		for e := range wt.Updates() {
			if e == nil {
				// Every value the bucket had is read: sync may trust what it knows of it.
				w.mu.Lock()
				w.loaded[kv.Bucket()] = true
				w.mu.Unlock()
				w.kick()
				continue
			}
			w.mu.Lock()
			if e.Operation() == jetstream.KeyValuePut {
				apply(e.Key(), e.Value())
			} else {
				apply(e.Key(), nil)
			}
			w.mu.Unlock()
			w.kick()
		}
		_ = wt.Stop()
		sleep(ctx, 250*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// target is one catalog node this server publishes: a running container with
// services, or an ad-hoc entry it owns.
type target struct {
	node     string
	address  string
	kind     string
	services []events.ServiceDef
	checks   []events.CheckDef
}

// adhocNode is the catalog node of an ad-hoc entry. Container names start with a
// letter, so the leading digit keeps the two apart.
func adhocNode(name string) string { return "0pub-" + name }

// targets lists what this server publishes now. Called with w.mu held.
func (w *Worker) targets() []target {
	var out []target
	for name, d := range w.defs {
		c, ok := w.cts[name]
		if !ok || c.Status != "Running" || c.IPv4 == "" || len(d.Services) == 0 {
			continue
		}
		out = append(out, target{node: name, address: c.IPv4, kind: "container", services: d.Services, checks: d.Checks})
	}
	for _, a := range w.ads {
		t := target{node: adhocNode(a.Name), address: a.IP, kind: "adhoc", checks: a.Checks}
		if a.Service {
			t.services = []events.ServiceDef{{Name: a.Name, Port: a.Port}}
		}
		out = append(out, t)
	}
	return out
}

// desired are the catalog nodes this server should have now. Called with w.mu held.
func (w *Worker) desired() map[string]consul.Node {
	out := map[string]consul.Node{}
	for _, t := range w.targets() {
		n := consul.Node{Name: t.node, Address: t.address, Meta: map[string]string{consul.MetaExternal: "true", consul.MetaServer: w.cfg.Server, consul.MetaKind: t.kind}}
		for _, s := range t.services {
			n.Services = append(n.Services, consul.Service{Name: s.Name, Port: s.Port, Tags: s.Tags})
		}
		for _, ch := range t.checks {
			st := w.checkState(t.node, t.address, ch)
			cc := catalogCheck(ch, t.address)
			cc.Status, cc.Output = st.status, st.output
			n.Checks = append(n.Checks, cc)
		}
		out[t.node] = n
	}
	return out
}

// catalogCheck is how a check of a node at address is described in the catalog, status aside.
func catalogCheck(ch events.CheckDef, address string) consul.Check {
	cc := consul.Check{ID: "skein:" + ch.Name, Name: ch.Name, Interval: ch.Interval, Timeout: ch.Timeout, TLSSkipVerify: ch.TLSSkipVerify}
	if ch.Kind == "tcp" {
		cc.TCP = fmt.Sprintf("%s:%d", checkHost(ch, address), ch.Port)
	} else {
		cc.HTTP = ch.URL
	}
	return cc
}

// checkHost is where a tcp check connects: its own address, or its node's.
func checkHost(ch events.CheckDef, address string) string {
	if ch.Address != "" {
		return ch.Address
	}
	return address
}

// fingerprint identifies what a registration contains, check statuses aside.
func fingerprint(n consul.Node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|", n.Address)
	for _, s := range n.Services {
		fmt.Fprintf(&b, "%s:%d:%s|", s.Name, s.Port, strings.Join(s.Tags, ","))
	}
	for _, c := range n.Checks {
		fmt.Fprintf(&b, "%s:%s:%s:%t:%s:%s|", c.ID, c.TCP, c.HTTP, c.TLSSkipVerify, c.Interval, c.Timeout)
	}
	return b.String()
}

// tellServices announces the services a node gained and lost since it was last
// written, and remembers what it has now.
func (w *Worker) tellServices(ctx context.Context, node, address string, now []consul.Service) {
	w.mu.Lock()
	before := w.told[node]
	if len(now) == 0 {
		delete(w.told, node)
	} else {
		w.told[node] = now
	}
	w.mu.Unlock()
	had := map[string]consul.Service{}
	for _, s := range before {
		had[s.Name] = s
	}
	has := map[string]bool{}
	for _, s := range now {
		has[s.Name] = true
		if old, ok := had[s.Name]; !ok || old.Port != s.Port {
			w.publish(ctx, events.TypeServiceRegistered, events.Registration{Container: node, Service: s.Name, Address: address, Port: s.Port})
		}
	}
	for _, s := range before {
		if !has[s.Name] {
			w.publish(ctx, events.TypeServiceDeregistered, events.Registration{Container: node, Service: s.Name, Port: s.Port})
		}
	}
}

// statuses identifies the checks' statuses of a registration.
func statuses(n consul.Node) string {
	var b strings.Builder
	for _, c := range n.Checks {
		// A first result that keeps the status still replaces "not run yet".
		fmt.Fprintf(&b, "%s=%s:%t|", c.ID, c.Status, c.Output == notRun)
	}
	return b.String()
}

// sync writes the difference between the desired catalog and what was applied;
// full also rereads the catalog, to repair what changed behind skein's back.
func (w *Worker) sync(ctx context.Context, full bool) {
	w.mu.Lock()
	if len(w.loaded) < followed {
		// Half-read buckets would look like containers gone: wait for all of them.
		w.mu.Unlock()
		return
	}
	var fwd []string
	for _, e := range w.eps {
		if e.Status == events.EndpointReady {
			fwd = append(fwd, fmt.Sprintf("%s#%d", e.IP, DNSPort))
		}
	}
	sort.Strings(fwd)
	dnsChanged := strings.Join(fwd, ",") != w.dns
	w.mu.Unlock()

	log := w.cfg.Log
	if dnsChanged {
		if err := w.cfg.Runtime.ForwardDNS(ctx, "consul", fwd); err != nil {
			log.Warn().Err(err).Msg("forwarding the consul domain")
		} else {
			w.mu.Lock()
			w.dns = strings.Join(fwd, ",")
			w.mu.Unlock()
			log.Info().Strs("endpoints", fwd).Msg("consul domain forwarded")
			full = true
		}
	}
	if len(fwd) == 0 {
		return
	}
	// Nothing is written before the statuses the catalog has are known: a
	// passing check must not be written critical while it waits for its first run.
	if err := w.seed(ctx); err != nil {
		log.Warn().Err(err).Msg("reading the catalog's check statuses")
		return
	}
	w.mu.Lock()
	want := w.desired()
	w.known = nil // every check published now has its state: the rest is stale
	applied, status := map[string]string{}, map[string]string{}
	for k, v := range w.applied {
		applied[k] = v
	}
	for k, v := range w.status {
		status[k] = v
	}
	w.mu.Unlock()
	if full {
		nodes, err := w.catalog.Nodes(ctx, map[string]string{consul.MetaServer: w.cfg.Server})
		if err != nil {
			log.Warn().Err(err).Msg("reading the catalog")
			return
		}
		present := map[string]bool{}
		for _, n := range nodes {
			present[n] = true
			if _, ok := applied[n]; !ok {
				applied[n] = "?" // in the catalog, unknown to us: check it below
			}
		}
		for n := range applied {
			if !present[n] {
				delete(applied, n) // gone from the catalog: register again
			}
		}
	}
	for name, n := range want {
		fp, sp := fingerprint(n), statuses(n)
		if applied[name] == fp {
			if status[name] != sp {
				if err := w.catalog.UpdateChecks(ctx, name, n.Address, n.Checks); err != nil {
					log.Warn().Err(err).Str("container", name).Msg("updating checks")
					continue
				}
				status[name] = sp
			}
			continue
		}
		if err := w.catalog.Register(ctx, n); err != nil {
			log.Warn().Err(err).Str("container", name).Msg("registering")
			continue
		}
		applied[name], status[name] = fp, sp
		w.tellServices(ctx, name, n.Address, n.Services)
		log.Info().Str("container", name).Str("address", n.Address).Msg("published")
	}
	for name := range applied {
		if _, ok := want[name]; ok {
			continue
		}
		if err := w.catalog.Deregister(ctx, name); err != nil {
			log.Warn().Err(err).Str("container", name).Msg("deregistering")
			continue
		}
		delete(applied, name)
		delete(status, name)
		w.tellServices(ctx, name, "", nil)
		log.Info().Str("container", name).Msg("removed from the catalog")
	}
	w.mu.Lock()
	w.applied, w.status = applied, status
	w.mu.Unlock()
}

func (w *Worker) publish(ctx context.Context, typ string, payload any) {
	if err := w.cfg.Publisher.Publish(ctx, typ, payload); err != nil {
		w.cfg.Log.Warn().Err(err).Str("type", typ).Msg("publishing event")
	}
}

// definitions reads a container's definitions with their revision (0: none).
func (w *Worker) definitions(ctx context.Context, name string) (events.Definitions, uint64, error) {
	e, err := w.services.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.Definitions{Container: name, Server: w.cfg.Server, Services: []events.ServiceDef{}, Checks: []events.CheckDef{}}, 0, nil
	}
	if err != nil {
		return events.Definitions{}, 0, workers.Transient("reading definitions of %s: %v", name, err)
	}
	var d events.Definitions
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return events.Definitions{}, 0, workers.Transient("bad definitions of %s: %v", name, err)
	}
	return d, e.Revision(), nil
}

// editDefinitions changes a container's definitions with compare-and-set.
func (w *Worker) editDefinitions(ctx context.Context, name string, edit func(*events.Definitions) error) (events.Definitions, error) {
	if err := w.ownContainer(ctx, name); err != nil {
		return events.Definitions{}, err
	}
	for attempt := 0; attempt < 5; attempt++ {
		d, rev, err := w.definitions(ctx, name)
		if err != nil {
			return d, err
		}
		if err := edit(&d); err != nil {
			return d, err
		}
		d.Server, d.Updated = w.cfg.Server, time.Now().UTC()
		if d.Services == nil {
			d.Services = []events.ServiceDef{}
		}
		if d.Checks == nil {
			d.Checks = []events.CheckDef{}
		}
		b, _ := json.Marshal(d)
		if rev == 0 {
			_, err = w.services.Create(ctx, name, b)
		} else {
			_, err = w.services.Update(ctx, name, b, rev)
		}
		if err == nil {
			return d, nil
		}
	}
	return events.Definitions{}, workers.Transient("definitions of %s changed concurrently", name)
}

// ownContainer refuses definitions for a container that is not on this server.
func (w *Worker) ownContainer(ctx context.Context, name string) error {
	e, err := w.ctrs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return workers.NotFound("no container %s: `skein list` shows what exists", name)
	}
	if err != nil {
		return workers.Transient("reading container %s: %v", name, err)
	}
	var c events.Container
	if err := json.Unmarshal(e.Value(), &c); err != nil || c.Server != w.cfg.Server {
		return workers.Invalid("container %s is not on server %s", name, w.cfg.Server)
	}
	return nil
}

// AddService defines a service of a container; the same definition again is a no-op.
func (w *Worker) AddService(ctx context.Context, req *workers.Request) (any, error) {
	var p events.ServiceAdd
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	return w.editDefinitions(ctx, p.Container, func(d *events.Definitions) error {
		for i, s := range d.Services {
			if s.Name == p.Name {
				d.Services[i] = events.ServiceDef{Name: p.Name, Port: p.Port, Tags: p.Tags}
				return nil
			}
		}
		d.Services = append(d.Services, events.ServiceDef{Name: p.Name, Port: p.Port, Tags: p.Tags})
		return nil
	})
}

// DeleteService removes one service definition of a container, or all of them.
func (w *Worker) DeleteService(ctx context.Context, req *workers.Request) (any, error) {
	var p events.ServiceDelete
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	return w.editDefinitions(ctx, p.Container, func(d *events.Definitions) error {
		if p.Name == "" {
			d.Services = nil
			return nil
		}
		kept := d.Services[:0]
		found := false
		for _, s := range d.Services {
			if s.Name == p.Name {
				found = true
				continue
			}
			kept = append(kept, s)
		}
		// A redelivered delete finds nothing left: that is success, not an error.
		if !found && req.Attempt == 1 {
			return workers.NotFound("container %s has no service %s: `skein listservice %s` shows its services", p.Container, p.Name, p.Container)
		}
		d.Services = kept
		return nil
	})
}

// AddCheck defines a health check of a container.
func (w *Worker) AddCheck(ctx context.Context, req *workers.Request) (any, error) {
	var p events.CheckAdd
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	if err := validCheck(p.Check); err != nil {
		return nil, err
	}
	return w.editDefinitions(ctx, p.Container, func(d *events.Definitions) error {
		for i, c := range d.Checks {
			if c.Name == p.Check.Name {
				d.Checks[i] = p.Check
				return nil
			}
		}
		d.Checks = append(d.Checks, p.Check)
		return nil
	})
}

// validCheck checks what the schema cannot: the fields a kind needs and sane durations.
func validCheck(c events.CheckDef) error {
	switch c.Kind {
	case "tcp":
		if c.Port < 1 {
			return workers.Invalid("tcp check %s needs a port: addcheck CONTAINER %s tcp PORT", c.Name, c.Name)
		}
		if c.TLSSkipVerify {
			return workers.Invalid("tcp check %s: tls_skip_verify is for http checks", c.Name)
		}
	case "http":
		if c.URL == "" {
			return workers.Invalid("http check %s needs a URL: addcheck CONTAINER %s http URL", c.Name, c.Name)
		}
	default:
		return workers.Invalid("unknown check type %q: use tcp or http", c.Kind)
	}
	iv, err1 := time.ParseDuration(c.Interval)
	to, err2 := time.ParseDuration(c.Timeout)
	if err1 != nil || err2 != nil || iv < 100*time.Millisecond || to <= 0 || to > iv {
		return workers.Invalid("check %s: interval %q and timeout %q must be durations with 100ms <= interval and 0 < timeout <= interval", c.Name, c.Interval, c.Timeout)
	}
	return nil
}

// DeleteCheck removes a check of a container.
func (w *Worker) DeleteCheck(ctx context.Context, req *workers.Request) (any, error) {
	var p events.CheckDelete
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	return w.editDefinitions(ctx, p.Container, func(d *events.Definitions) error {
		kept := d.Checks[:0]
		found := false
		for _, c := range d.Checks {
			if c.Name == p.Name {
				found = true
				continue
			}
			kept = append(kept, c)
		}
		if !found && req.Attempt == 1 {
			return workers.NotFound("container %s has no check %s", p.Container, p.Name)
		}
		d.Checks = kept
		return nil
	})
}
