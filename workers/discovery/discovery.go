// Package discovery runs service discovery on one server: Consul endpoints in
// containers, the services and checks containers publish while they run, the
// checks themselves, and DNS forwarding of the consul domain on the server's
// bridge. Containers are published as catalog nodes, so every endpoint answers
// for them and losing one endpoint loses nothing.
package discovery

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/svc"
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
	// Nodes lists the nodes whose meta matches, each with its service IDs, sorted.
	Nodes(ctx context.Context, meta map[string]string) (map[string][]string, error)
	// NodeChecks lists the nodes whose meta matches with their address and
	// their checks as the catalog has them (status, output, definition).
	NodeChecks(ctx context.Context, meta map[string]string) ([]consul.Node, error)
}

var _ Catalog = (*consul.Client)(nil)

// Config configures the discovery worker of one server.
type Config struct {
	svc.Deps
	// Log is the worker's logger.
	Log zerolog.Logger
	// Catalog overrides the Consul catalog client (tests); nil uses the endpoints.
	Catalog Catalog
}

// Worker is the discovery worker of one server.
type Worker struct {
	cfg       Config
	host      *svc.Host
	endpoints *svc.Kind[events.Endpoint, *events.Endpoint]
	services  *bus.Store[events.Definitions]
	ctrs      *bus.Store[events.Container]
	adhoc     *bus.Store[events.Adhoc]
	tokens    *bus.Store[events.ConsulToken]
	hbs       *bus.Store[events.Heartbeat]
	health    *bus.Store[events.Health]
	catalog   Catalog
	tok       tokens
	kick      chan struct{}

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
	// healthTold is what the health bucket was last given, by container.
	healthTold map[string]string
	dns        string // forwarding last set on the bridge
	poke       chan struct{}
}

// Capability is the service discovery capability of an agent.
func Capability(ctx context.Context, d svc.Deps) (svc.Capability, error) {
	return New(ctx, Config{Deps: d, Log: d.Host.Log.With().Str("worker", "discovery").Logger()})
}

// New returns the discovery worker.
func New(ctx context.Context, cfg Config) (*Worker, error) {
	js := cfg.JS
	w := &Worker{cfg: cfg, host: cfg.Host, eps: map[string]events.Endpoint{}, defs: map[string]events.Definitions{}, cts: map[string]events.Container{}, ads: map[string]events.Adhoc{},
		applied: map[string]string{}, status: map[string]string{}, told: map[string][]consul.Service{}, checks: map[string]*checkState{}, loaded: map[string]bool{}, poke: make(chan struct{}, 1), dns: "\x00",
		kick: make(chan struct{}, 1), healthTold: map[string]string{}}
	eps, err := bus.OpenStore[events.Endpoint](ctx, js)
	if err != nil {
		return nil, err
	}
	w.endpoints = &svc.Kind[events.Endpoint, *events.Endpoint]{Noun: "endpoint", Prefix: "endpoint", ListCmd: "skein listep", Store: eps,
		Gone: func(ctx context.Context, e events.Endpoint) {
			w.publish(ctx, events.TypeEndpointDeleted, events.EndpointEvent{Name: e.Name, IP: e.IP, Cause: "reconcile"})
		}}
	if w.services, err = bus.OpenStore[events.Definitions](ctx, js); err != nil {
		return nil, err
	}
	if w.ctrs, err = bus.OpenStore[events.Container](ctx, js); err != nil {
		return nil, err
	}
	if w.health, err = bus.OpenStore[events.Health](ctx, js); err != nil {
		return nil, err
	}
	if w.adhoc, err = bus.OpenStore[events.Adhoc](ctx, js); err != nil {
		return nil, err
	}
	if w.tokens, err = bus.OpenStore[events.ConsulToken](ctx, js); err != nil {
		return nil, err
	}
	if w.hbs, err = bus.OpenStore[events.Heartbeat](ctx, js); err != nil {
		return nil, err
	}
	w.tok.mine, w.tok.verified = map[string]events.ConsulToken{}, map[string]time.Time{}
	w.catalog = cfg.Catalog
	if w.catalog == nil {
		w.catalog = prefixed{Catalog: consul.New(w.endpointAddrs).WithToken(w.catalogToken), prefix: NodePrefix(w.host.Server)}
	}
	return w, nil
}

// defsLock is the lock key of a container's definitions.
func defsLock(container string) string { return "definitions/" + container }

// Register adds the worker's handlers to the runtime, in one visible block.
func (w *Worker) Register(r *workers.Runtime) {
	epLock := func(p events.EndpointRef) string { return w.endpoints.Lock(p.Name) }
	workers.Handle(r, workers.Command[events.EndpointAdd, events.Endpoint]{Type: events.TypeEndpointAdd, Lock: func(p events.EndpointAdd) string { return w.endpoints.Lock(endpointName(p)) },
		Deadline: 3 * time.Minute, Run: w.AddEndpoint})
	workers.Handle(r, workers.Command[events.EndpointRef, events.Endpoint]{Type: events.TypeEndpointDelete, Lock: epLock, Run: w.DeleteEndpoint})
	workers.HandleQuery(r, workers.Query[events.EndpointReseal, events.Sealed]{Type: events.TypeEndpointReseal, Run: w.Reseal})
	workers.Handle(r, workers.Command[events.ServiceAdd, events.Definitions]{Type: events.TypeServiceAdd, Lock: func(p events.ServiceAdd) string { return defsLock(p.Container) }, Run: w.AddService})
	workers.Handle(r, workers.Command[events.ServiceDelete, events.Definitions]{Type: events.TypeServiceDelete, Lock: func(p events.ServiceDelete) string { return defsLock(p.Container) }, Run: w.DeleteService})
	workers.Handle(r, workers.Command[events.CheckAdd, events.Definitions]{Type: events.TypeCheckAdd, Lock: func(p events.CheckAdd) string { return defsLock(p.Container) }, Run: w.AddCheck})
	workers.Handle(r, workers.Command[events.CheckDelete, events.Definitions]{Type: events.TypeCheckDelete, Lock: func(p events.CheckDelete) string { return defsLock(p.Container) }, Run: w.DeleteCheck})
	workers.Handle(r, workers.Command[events.Publish, events.Adhoc]{Type: events.TypePublish, Lock: func(p events.Publish) string { return "adhoc/" + p.Name }, Run: w.Publish})
	workers.Handle(r, workers.Command[events.Unpublish, events.Adhoc]{Type: events.TypeUnpublish, Lock: func(p events.Unpublish) string { return "adhoc/" + p.Name }, Run: w.Unpublish})
}

// endpointAddrs are the HTTP addresses of the ready endpoints.
func (w *Worker) endpointAddrs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, e := range w.eps {
		if e.Status == events.StatusReady {
			out = append(out, fmt.Sprintf("%s:%d", e.IP, HTTPPort))
		}
	}
	sort.Strings(out)
	return out
}

func (w *Worker) poked() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// Run keeps the catalog, the checks and DNS forwarding in step with skein's
// state until ctx ends: it follows the endpoints, definitions and container
// records as they change, and resyncs now and then.
func (w *Worker) Run(ctx context.Context) {
	go watch(ctx, w, w.endpoints.Store, "", func(key string, e *events.Endpoint) {
		if e == nil {
			delete(w.eps, key)
			return
		}
		w.eps[key] = *e
	})
	go watch(ctx, w, w.services, w.host.Server, func(key string, d *events.Definitions) {
		if d == nil || d.Server != w.host.Server {
			delete(w.defs, key)
			return
		}
		w.defs[key] = *d
	})
	go watch(ctx, w, w.ctrs, w.host.Server, func(key string, c *events.Container) {
		if c == nil || c.Server != w.host.Server {
			delete(w.cts, key)
			return
		}
		w.cts[key] = *c
	})
	go watch(ctx, w, w.adhoc, w.host.Server, func(key string, a *events.Adhoc) {
		if a == nil || a.Server != w.host.Server {
			delete(w.ads, key)
			return
		}
		w.ads[key] = *a
	})
	go w.runChecks(ctx)
	go w.followTokens(ctx)
	go w.runMinter(ctx)
	go svc.Follow(ctx, w.host, w.endpoints, w.kick, 30*time.Second)
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

// watch follows a store (the records of one server, or all when server is ""),
// applying each change by record name under the lock and poking the sync.
func watch[T any](ctx context.Context, w *Worker, st *bus.Store[T], server string, apply func(name string, v *T)) {
	filter := ">"
	if server != "" {
		filter = server + ".>"
	}
	for c := range st.Follow(ctx, filter, nil) {
		w.mu.Lock()
		if c.Synced {
			// Every value the bucket had is read: sync may trust what it knows of it.
			w.loaded[st.Bucket()] = true
		} else {
			// Keys are SERVER.NAME: the maps hold records by name.
			_, name, _ := strings.Cut(c.Key, ".")
			apply(name, c.Value)
		}
		w.mu.Unlock()
		w.poked()
	}
}

// Gone tells the worker a container is gone: its definitions go with it (a
// later container of the same name starts with none), and an endpoint's
// record may be a ghost now.
func (w *Worker) Gone(name string) {
	defer func() {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w.dropDefinitions(ctx, name)
}

// dropDefinitions removes the definitions of a container that is gone, under
// their lock, and tells it; a failure is left to the next full sync.
func (w *Worker) dropDefinitions(ctx context.Context, name string) {
	unlock, err := w.host.Locks.Lock(ctx, defsLock(name))
	if err != nil {
		return
	}
	defer unlock()
	// The record, not the follower's copy, decides that the container is gone.
	if c, err := w.ctrs.FindByName(ctx, name); err != nil || c != nil && c.Value.Server == w.host.Server {
		return
	}
	had, err := w.services.Find(ctx, bus.Key(w.host.Server, name))
	if err != nil || had == nil {
		return
	}
	if err := w.services.Delete(ctx, bus.Key(w.host.Server, name), 0); err != nil {
		w.cfg.Log.Warn().Err(err).Str("container", name).Msg("removing the definitions of a deleted container")
		return
	}
	w.publish(ctx, events.TypeServiceDefined, events.Definitions{Container: name, Server: w.host.Server, Services: []events.ServiceDef{}, Checks: []events.CheckDef{}, Updated: time.Now().UTC()})
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
		n := consul.Node{Name: t.node, Address: t.address, Meta: map[string]string{consul.MetaExternal: "true", consul.MetaServer: w.host.Server, consul.MetaKind: t.kind}}
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
	var orphans []string
	if full {
		// Definitions whose container has no record: their Gone found the bus away.
		for name := range w.defs {
			if _, ok := w.cts[name]; !ok {
				orphans = append(orphans, name)
			}
		}
	}
	var fwd []string
	for _, e := range w.eps {
		if e.Status == events.StatusReady {
			fwd = append(fwd, fmt.Sprintf("%s#%d", e.IP, DNSPort))
		}
	}
	sort.Strings(fwd)
	dnsChanged := strings.Join(fwd, ",") != w.dns
	w.mu.Unlock()
	for _, name := range orphans {
		w.dropDefinitions(ctx, name)
	}

	log := w.cfg.Log
	if dnsChanged {
		if err := w.host.Runtime.ForwardDNS(ctx, "consul", fwd); err != nil {
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
		nodes, err := w.catalog.Nodes(ctx, map[string]string{consul.MetaServer: w.host.Server})
		if err != nil {
			log.Warn().Err(err).Msg("reading the catalog")
			return
		}
		for n, ids := range nodes {
			if _, ok := applied[n]; !ok {
				applied[n] = "?" // in the catalog, unknown to us: check it below
			} else if wn, ok := want[n]; ok && !sameIDs(ids, wn.Services) {
				delete(applied, n) // its services are not what was written (removed behind skein's back): register again
			}
		}
		for n := range applied {
			if _, ok := nodes[n]; !ok {
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

// sameIDs says whether the catalog's service IDs of a node (sorted) are those
// of services (registered with their name as ID).
func sameIDs(ids []string, services []consul.Service) bool {
	want := make([]string, 0, len(services))
	for _, s := range services {
		want = append(want, s.Name)
	}
	sort.Strings(want)
	return strings.Join(ids, "\x00") == strings.Join(want, "\x00")
}

func (w *Worker) publish(ctx context.Context, typ string, payload any) {
	if err := w.cfg.Publisher.Publish(ctx, typ, payload); err != nil {
		w.cfg.Log.Warn().Err(err).Str("type", typ).Msg("publishing event")
	}
}

// editDefinitions changes a container's definitions, at the revision read.
func (w *Worker) editDefinitions(ctx context.Context, name string, edit func(*events.Definitions) error) (events.Definitions, error) {
	if err := w.ownContainer(ctx, name); err != nil {
		return events.Definitions{}, err
	}
	e, err := w.services.Modify(ctx, bus.Key(w.host.Server, name), func(d events.Definitions, exists bool) (events.Definitions, error) {
		if !exists {
			d = events.Definitions{Container: name}
		}
		if err := edit(&d); err != nil {
			return d, err
		}
		d.Server, d.Updated = w.host.Server, time.Now().UTC()
		if d.Services == nil {
			d.Services = []events.ServiceDef{}
		}
		if d.Checks == nil {
			d.Checks = []events.CheckDef{}
		}
		return d, nil
	})
	if err != nil {
		return events.Definitions{}, workers.FromStore(err, "definitions of "+name)
	}
	w.publish(ctx, events.TypeServiceDefined, e.Value)
	return e.Value, nil
}

// ownContainer refuses definitions for a container that is not on this server.
func (w *Worker) ownContainer(ctx context.Context, name string) error {
	e, err := w.ctrs.FindByName(ctx, name)
	if err != nil {
		return workers.Transient("reading container %s: %v", name, err)
	}
	if e == nil {
		return workers.NotFound("no container %s: `skein list` shows what exists", name)
	}
	if e.Value.Server != w.host.Server {
		return workers.Invalid("container %s is not on server %s", name, w.host.Server)
	}
	return nil
}

// upsert replaces the item with v's key in list, or appends v.
func upsert[T any](list []T, v T, key func(T) string) []T {
	for i := range list {
		if key(list[i]) == key(v) {
			list[i] = v
			return list
		}
	}
	return append(list, v)
}

// drop removes the items with key k; found says whether there was one.
func drop[T any](list []T, k string, key func(T) string) (kept []T, found bool) {
	kept = []T{}
	for _, x := range list {
		if key(x) == k {
			found = true
			continue
		}
		kept = append(kept, x)
	}
	return kept, found
}

func serviceName(s events.ServiceDef) string { return s.Name }
func checkName(c events.CheckDef) string     { return c.Name }

// AddService defines a service of a container; the same definition again is a no-op.
func (w *Worker) AddService(ctx context.Context, req *workers.Request, p events.ServiceAdd) (events.Definitions, error) {
	return w.editDefinitions(ctx, p.Container, func(d *events.Definitions) error {
		d.Services = upsert(d.Services, events.ServiceDef{Name: p.Name, Port: p.Port, Tags: p.Tags}, serviceName)
		return nil
	})
}

// DeleteService removes one service definition of a container, or all of them.
// Removing one that this command already removed on an earlier attempt succeeds.
func (w *Worker) DeleteService(ctx context.Context, req *workers.Request, p events.ServiceDelete) (events.Definitions, error) {
	return w.editDefinitions(ctx, p.Container, func(d *events.Definitions) error {
		if p.Name == "" {
			d.Services = nil
			return nil
		}
		kept, found := drop(d.Services, p.Name, serviceName)
		if err := w.absent(ctx, req, found, "container %s has no service %s: `skein listservice %s` shows its services", p.Container, p.Name, p.Container); err != nil {
			return err
		}
		d.Services = kept
		return nil
	})
}

// absent refuses to remove what is not there, unless an earlier attempt of the
// same command found it (and so removed it).
func (w *Worker) absent(ctx context.Context, req *workers.Request, found bool, format string, args ...any) error {
	first, err := req.FirstSaw(ctx, "found", found)
	if err != nil {
		return err
	}
	if !found && !first {
		return workers.NotFound(format, args...)
	}
	return nil
}

// AddCheck defines a health check of a container.
func (w *Worker) AddCheck(ctx context.Context, req *workers.Request, p events.CheckAdd) (events.Definitions, error) {
	if err := validCheck(p.Check); err != nil {
		return events.Definitions{}, err
	}
	return w.editDefinitions(ctx, p.Container, func(d *events.Definitions) error {
		d.Checks = upsert(d.Checks, p.Check, checkName)
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
func (w *Worker) DeleteCheck(ctx context.Context, req *workers.Request, p events.CheckDelete) (events.Definitions, error) {
	return w.editDefinitions(ctx, p.Container, func(d *events.Definitions) error {
		kept, found := drop(d.Checks, p.Name, checkName)
		if err := w.absent(ctx, req, found, "container %s has no check %s", p.Container, p.Name); err != nil {
			return err
		}
		d.Checks = kept
		return nil
	})
}
