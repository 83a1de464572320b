// Package lb runs load balancers on one server: haproxy or nginx in a service
// container (through the svc layer), their configuration rendered from skein's
// state by pure functions, checked by the tool itself before it replaces the
// running one, and rolled back when it fails. haproxy backend changes go through
// its runtime API: no reload, no request dropped.
package lb

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/haproxy"
	"github.com/skeinhq/skein/internal/nginx"
	"github.com/skeinhq/skein/internal/validate"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/discovery"
	"github.com/skeinhq/skein/workers/svc"
)

// RuntimeAPI is what the worker needs of a haproxy's runtime API.
type RuntimeAPI interface {
	// AddServer adds a server to a backend and puts it in service.
	AddServer(ctx context.Context, backend, name, addr string, port int) error
	// RemoveServer drains a server, then deletes it.
	RemoveServer(ctx context.Context, backend, name string) error
	// Servers lists a backend's servers as haproxy runs them, with their state.
	Servers(ctx context.Context, backend string) ([]haproxy.Server, error)
}

var _ RuntimeAPI = haproxy.Client{}

// Config configures the load balancer worker of one server.
type Config struct {
	svc.Deps
	// Log is the worker's logger.
	Log zerolog.Logger
	// API returns the runtime API behind a socket; nil speaks to haproxy (tests fake it).
	API func(socket string) RuntimeAPI
}

// Capability is the load balancer capability of an agent.
func Capability(ctx context.Context, d svc.Deps) (svc.Capability, error) {
	return New(ctx, Config{Deps: d, Log: d.Host.Log.With().Str("worker", "lb").Logger()})
}

// Worker is the load balancer worker of one server.
type Worker struct {
	cfg       Config
	host      *svc.Host
	kind      *svc.Kind[events.LB, *events.LB]
	endpoints *bus.Store[events.Endpoint]
	kick      chan struct{}
}

// New returns the load balancer worker.
func New(ctx context.Context, cfg Config) (*Worker, error) {
	st, err := bus.OpenStore[events.LB](ctx, cfg.JS)
	if err != nil {
		return nil, err
	}
	eps, err := bus.OpenStore[events.Endpoint](ctx, cfg.JS)
	if err != nil {
		return nil, err
	}
	if cfg.API == nil {
		cfg.API = func(socket string) RuntimeAPI { return haproxy.Client{Socket: socket} }
	}
	w := &Worker{cfg: cfg, host: cfg.Host, endpoints: eps, kick: make(chan struct{}, 1)}
	w.kind = &svc.Kind[events.LB, *events.LB]{Noun: "load balancer", Prefix: "lb", ListCmd: "skein listlbs", Store: st,
		Gone: func(ctx context.Context, l events.LB) {
			w.publish(ctx, events.LBChange{Name: l.Name, Change: "deleted", Mode: l.Mode, Cause: "reconcile"})
		},
		Repair: w.repair}
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(backendStates{w}); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Register adds the worker's handlers to the runtime, in one visible block.
func (w *Worker) Register(r *workers.Runtime) {
	k := w.kind
	workers.Handle(r, workers.Command[events.LBAdd, events.LB]{Type: events.TypeLBAdd, Lock: func(p events.LBAdd) string { return svc.NameLock(k, p.Name) }, Deadline: 3 * time.Minute, Run: w.Add})
	workers.Handle(r, workers.Command[events.LBRef, events.LB]{Type: events.TypeLBDelete, Lock: func(p events.LBRef) string { return k.Lock(p.Name) }, Run: w.Delete})
	workers.Handle(r, workers.Command[events.LBBackends, events.LB]{Type: events.TypeLBBackendsAdd, Lock: func(p events.LBBackends) string { return k.Lock(p.LB) }, Run: w.AddBackends})
	workers.Handle(r, workers.Command[events.LBBackendNames, events.LB]{Type: events.TypeLBBackendsDelete, Lock: func(p events.LBBackendNames) string { return k.Lock(p.LB) }, Run: w.DeleteBackends})
	workers.Handle(r, workers.Command[events.LBSet, events.LB]{Type: events.TypeLBSet, Lock: func(p events.LBSet) string { return k.Lock(p.LB) }, Run: w.Set})
}

// Run repairs the load balancer records from what runs until ctx ends: at
// start, when a container goes, and every 30 s.
func (w *Worker) Run(ctx context.Context) { svc.Follow(ctx, w.host, w.kind, w.kick, 30*time.Second) }

// Gone tells the worker a container is gone: a load balancer's record may be a ghost now.
func (w *Worker) Gone(string) {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Add runs a load balancer in a container on this server.
func (w *Worker) Add(ctx context.Context, req *workers.Request, p events.LBAdd) (events.LB, error) {
	var none events.LB
	if p.Kind == "nginx" {
		if p.URL == "" || len(p.Backends) == 0 {
			return none, workers.Invalid("an nginx load balancer needs a URL and at least one backend: addlb nginx SERVER -u URL -b IP:PORT")
		}
		if !validate.Host.Valid(p.URL) {
			return none, workers.Invalid("url %q: want a host name such as mywordpress.org", p.URL)
		}
	} else if p.URL != "" || len(p.Backends) > 0 {
		return none, workers.Invalid("-u and -b are for nginx load balancers; haproxy ones get backends with addbackends")
	}
	pair, err := w.openPair(p.TLS)
	if err != nil {
		return none, err
	}
	var resolvers []string
	for _, b := range p.Backends {
		if err := checkBackend(b); err != nil {
			return none, err
		}
		if IsName(b.Host) {
			rs, err := w.endpointResolvers(ctx)
			if err != nil {
				return none, err
			}
			resolvers = rs
		}
	}
	if err := checkNginxNames(events.LB{Kind: p.Kind, Backends: p.Backends}); err != nil {
		return none, err
	}
	rec := events.LB{Resource: events.Resource{Name: p.Name}, Kind: p.Kind, Mode: modes(p.Kind)[0], URL: p.URL, TLS: p.TLS != nil, Resolvers: resolvers,
		Backends: append([]events.Backend{}, p.Backends...)}
	e, err := svc.Claim(ctx, req, w.host, w.kind, p.Name, p.Kind, rec)
	if err != nil {
		return none, err
	}
	if e.Value.Status == events.StatusReady {
		return e.Value, nil
	}
	name := e.Value.Name
	if _, err := svc.Launch(ctx, req, w.host, name, ""); err != nil {
		return none, err
	}
	req.Progress("configure", "configuring "+p.Kind)
	set, err := files(e.Value, pair)
	if err != nil {
		return none, err
	}
	applied, err := svc.Apply(ctx, w.host.Runtime, name, component(p.Kind), set, svc.Reload, e.Value.Applied)
	if err != nil {
		return none, err
	}
	e.Value.Applied = applied
	if p.Kind == "haproxy" {
		// The runtime API, reachable from the agent: backend changes need no reload.
		if err := w.host.Runtime.ExposeSocket(ctx, name, w.socketPath(name), "/run/haproxy/admin.sock"); err != nil {
			return none, workers.Transient("exposing the haproxy socket of %s: %v", name, err)
		}
	}
	lb, err := svc.Ready(ctx, w.kind, e)
	if err != nil {
		return none, err
	}
	w.publish(ctx, events.LBChange{Name: name, Change: "added", Backends: len(lb.Backends), Mode: lb.Mode})
	return lb, nil
}

// Delete removes a load balancer and its container.
func (w *Worker) Delete(ctx context.Context, req *workers.Request, p events.LBRef) (events.LB, error) {
	lb, err := svc.Remove(ctx, req, w.host, w.kind, p.Name, nil)
	if err != nil {
		return lb, err
	}
	w.publish(ctx, events.LBChange{Name: p.Name, Change: "deleted", Mode: lb.Mode})
	return lb, nil
}

// AddBackends adds backends; a backend with a name already there is replaced.
func (w *Worker) AddBackends(ctx context.Context, req *workers.Request, p events.LBBackends) (events.LB, error) {
	asked := make([]string, 0, len(p.Backends))
	for _, b := range p.Backends {
		asked = append(asked, b.Name)
	}
	return w.change(ctx, req, asked, p.LB, "backends", nil, func(lb *events.LB) error {
		for _, nb := range p.Backends {
			if err := checkBackend(nb); err != nil {
				return err
			}
			if IsName(nb.Host) && len(lb.Resolvers) == 0 {
				rs, err := w.endpointResolvers(ctx)
				if err != nil {
					return err
				}
				lb.Resolvers = rs
			}
			replaced := false
			for i, b := range lb.Backends {
				if b.Name == nb.Name {
					lb.Backends[i], replaced = nb, true
				}
			}
			if !replaced {
				lb.Backends = append(lb.Backends, nb)
			}
		}
		sort.Slice(lb.Backends, func(i, j int) bool { return lb.Backends[i].Name < lb.Backends[j].Name })
		return checkNginxNames(*lb)
	})
}

// checkBackend refuses a backend the renderers cannot take: its name and host
// land in configuration files, so they are checked here too, not only by the schema.
func checkBackend(b events.Backend) error {
	if err := validate.Ident.Check(b.Name); err != nil {
		return workers.Invalid("backend name: %v", err)
	}
	if err := validate.Port(b.Port); err != nil {
		return workers.Invalid("backend %s needs NAME:IP:PORT: %v", b.Name, err)
	}
	if !validate.BackendHost.Valid(b.Host) {
		return workers.Invalid("backend %s: %q is neither an IPv4 address nor a Consul name (NAME.service.consul)", b.Name, b.Host)
	}
	return nil
}

// checkNginxNames refuses what nginx cannot do: a Consul-name backend beside others.
func checkNginxNames(lb events.LB) error {
	if lb.Kind != "nginx" || len(lb.Backends) < 2 {
		return nil
	}
	for _, b := range lb.Backends {
		if IsName(b.Host) {
			return workers.Invalid("an nginx load balancer with a Consul-name backend (%s) has no other backend: the name already balances over its instances", b.Host)
		}
	}
	return nil
}

// DeleteBackends removes backends by name; removing one that is gone succeeds.
func (w *Worker) DeleteBackends(ctx context.Context, req *workers.Request, p events.LBBackendNames) (events.LB, error) {
	return w.change(ctx, req, p.Names, p.LB, "backends", nil, func(lb *events.LB) error {
		drop := map[string]bool{}
		for _, n := range p.Names {
			drop[n] = true
		}
		kept := []events.Backend{}
		for _, b := range lb.Backends {
			if !drop[b.Name] {
				kept = append(kept, b)
			}
		}
		lb.Backends = kept
		return nil
	})
}

// Set changes a setting of a load balancer.
func (w *Worker) Set(ctx context.Context, req *workers.Request, p events.LBSet) (events.LB, error) {
	var pair *pemPair
	if p.Key == "ssl" {
		if p.TLS == nil {
			return events.LB{}, workers.Invalid("ssl needs a certificate and its key: setlb LB ssl CERT KEY")
		}
		var err error
		if pair, err = w.openPair(p.TLS); err != nil {
			return events.LB{}, err
		}
	}
	return w.change(ctx, nil, nil, p.LB, p.Key, pair, func(lb *events.LB) error {
		switch p.Key {
		case "resolvers":
			var rs []string
			for _, r := range strings.Split(p.Value, ",") {
				r = strings.TrimSpace(r)
				if !validate.AddrPort.Valid(r) {
					return workers.Invalid("resolver %q: want IP:PORT, e.g. 10.77.1.10:8600", r)
				}
				rs = append(rs, r)
			}
			lb.Resolvers = rs
			return nil
		case "url":
			if lb.Kind != "nginx" {
				return workers.Invalid("haproxy load balancers answer for any host name: url is for nginx ones")
			}
			if !validate.Host.Valid(p.Value) {
				return workers.Invalid("url %q: want a host name such as mywordpress.org", p.Value)
			}
			lb.URL = p.Value
			return nil
		case "ssl":
			lb.TLS = true
			return nil
		case "workers":
			n, err := strconv.Atoi(p.Value)
			if err != nil || n < 1 || n > 64 {
				return workers.Invalid("workers %q: a number from 1 to 64", p.Value)
			}
			lb.Workers = n
			return nil
		case "mode":
			for _, m := range modes(lb.Kind) {
				if m == p.Value {
					lb.Mode = m
					return nil
				}
			}
			return workers.Invalid("%s load balancers have no mode %q: use %s", lb.Kind, p.Value, strings.Join(modes(lb.Kind), ", "))
		}
		return workers.Invalid("unknown setting %q", p.Key)
	})
}

// change edits a ready load balancer and makes it run the result before it is
// recorded. haproxy backend changes go live through the runtime API first (no
// reload, nothing dropped) and the files follow, checked but not reloaded; if
// the files are refused the live change is undone. Anything else reloads.
// change edits a load balancer (svc.Change) and tells lb.changed. For a
// change of the backends asked names them: the event names those of them
// the command added or removed, compared with the backends before its
// first attempt (journaled), so that an attempt after one whose record
// landed but whose answer was lost tells the change it finds made (found
// by the NATS-cluster soak: an agent cut from the bus mid-write, the
// redelivery's event named no backend).
func (w *Worker) change(ctx context.Context, req *workers.Request, asked []string, name, what string, pair *pemPair, edit func(*events.LB) error) (events.LB, error) {
	var added, removed []string
	lb, err := svc.Change(ctx, w.host, w.kind, name, edit, func(old, next events.LB) (string, error) {
		added, removed = backendDiff(old.Backends, next.Backends)
		if req != nil && len(asked) > 0 {
			first, err := req.Once(ctx, "backends-before", func() (string, error) { return backendsKey(old.Backends), nil })
			if err != nil {
				return "", err
			}
			added, removed = askedDiff(first, next.Backends, asked)
		}
		comp := component(next.Kind)
		set, err := files(next, pair)
		if err != nil {
			return "", err
		}
		if what != "backends" || next.Kind != "haproxy" || anyName(old, next) {
			return svc.Apply(ctx, w.host.Runtime, name, comp, set, svc.Reload, old.Applied)
		}
		api := w.cfg.API(w.socketPath(name))
		if err := live(ctx, api, old, next); err != nil {
			w.cfg.Log.Info().Err(err).Str("lb", name).Msg("runtime API change refused; reloading instead")
			_ = live(ctx, api, next, old)
			return svc.Apply(ctx, w.host.Runtime, name, comp, set, svc.Reload, old.Applied)
		}
		applied, err := svc.Apply(ctx, w.host.Runtime, name, comp, set, svc.NoReload, old.Applied)
		if err != nil {
			if uerr := live(ctx, api, next, old); uerr != nil {
				w.cfg.Log.Error().Err(uerr).Str("lb", name).Msg("undoing a refused runtime API change")
			}
			return "", err
		}
		return applied, nil
	})
	if err != nil {
		return lb, err
	}
	w.publish(ctx, events.LBChange{Name: name, Change: what, Backends: len(lb.Backends), Mode: lb.Mode, Added: added, Removed: removed})
	return lb, nil
}

// repair makes a ready haproxy run its record's backends again when what it
// runs differs (a command cut short between its live change and its record,
// or a change behind skein's back): the record's files, reloaded, and an
// lb.changed event with cause reconcile. Backends by Consul name are left to
// haproxy's resolvers.
func (w *Worker) repair(ctx context.Context, lb events.LB) error {
	if lb.Kind != "haproxy" || anyName(lb, lb) {
		return nil
	}
	srvs, err := w.cfg.API(w.socketPath(lb.Name)).Servers(ctx, "be")
	if err != nil {
		return err
	}
	// "show servers state" gives a server's address without its port: a
	// running server is taken to have its record's port, names and hosts compared.
	port := map[string]int{}
	for _, b := range lb.Backends {
		port[b.Name] = b.Port
	}
	runs := make([]events.Backend, 0, len(srvs))
	for _, s := range srvs {
		host := s.Addr
		if h, _, err := net.SplitHostPort(s.Addr); err == nil {
			host = h
		}
		runs = append(runs, events.Backend{Name: s.Name, Host: host, Port: port[s.Name]})
	}
	added, removed := backendDiff(runs, lb.Backends)
	if len(added) == 0 && len(removed) == 0 {
		return nil
	}
	sort.Strings(removed)
	set, err := files(lb, nil)
	if err != nil {
		return err
	}
	if _, err := svc.Apply(ctx, w.host.Runtime, lb.Name, component(lb.Kind), set, svc.Reload, ""); err != nil {
		return err
	}
	w.cfg.Log.Warn().Str("lb", lb.Name).Strs("added", added).Strs("removed", removed).Msg("reconcile: haproxy ran other backends than its record; reloaded from the record")
	w.publish(ctx, events.LBChange{Name: lb.Name, Change: "backends", Backends: len(lb.Backends), Mode: lb.Mode, Added: added, Removed: removed, Cause: "reconcile"})
	return nil
}

// backendDiff names the backends next has that old has not (or has otherwise),
// and those old has that next has not.
func backendDiff(old, next []events.Backend) (added, removed []string) {
	was := map[string]events.Backend{}
	for _, b := range old {
		was[b.Name] = b
	}
	is := map[string]bool{}
	for _, b := range next {
		is[b.Name] = true
		if o, ok := was[b.Name]; !ok || o.Host != b.Host || o.Port != b.Port {
			added = append(added, b.Name)
		}
	}
	for _, b := range old {
		if !is[b.Name] {
			removed = append(removed, b.Name)
		}
	}
	return added, removed
}

// backendsKey writes backends as "name=host:port" words, sorted by name.
func backendsKey(bs []events.Backend) string {
	words := make([]string, 0, len(bs))
	for _, b := range bs {
		words = append(words, fmt.Sprintf("%s=%s:%d", b.Name, b.Host, b.Port))
	}
	sort.Strings(words)
	return strings.Join(words, " ")
}

// askedDiff is which of the backends asked are added (new, or at another
// address) in next and which removed, against before (backendsKey's words).
func askedDiff(before string, next []events.Backend, asked []string) (added, removed []string) {
	was := map[string]string{}
	for _, w := range strings.Fields(before) {
		if n, addr, ok := strings.Cut(w, "="); ok {
			was[n] = addr
		}
	}
	is := map[string]string{}
	for _, b := range next {
		is[b.Name] = fmt.Sprintf("%s:%d", b.Host, b.Port)
	}
	for _, n := range asked {
		now, in := is[n]
		then, had := was[n]
		switch {
		case in && (!had || then != now):
			added = append(added, n)
		case had && !in:
			removed = append(removed, n)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	return added, removed
}

// anyName says whether either side has a Consul-name backend: those are
// followed by resolvers and server templates, which need a reload.
func anyName(a, b events.LB) bool {
	for _, x := range append(append([]events.Backend(nil), a.Backends...), b.Backends...) {
		if IsName(x.Host) {
			return true
		}
	}
	return false
}

// endpointResolvers are the DNS addresses of the ready Consul endpoints.
func (w *Worker) endpointResolvers(ctx context.Context) ([]string, error) {
	return discovery.Resolvers(ctx, w.endpoints)
}

// socketPath is where the agent reaches a load balancer's haproxy runtime API.
func (w *Worker) socketPath(name string) string {
	return fmt.Sprintf("/run/skein/lb/%s-%s.sock", w.host.Server, name)
}

// live changes the running haproxy's servers from old's backends to next's.
func live(ctx context.Context, api RuntimeAPI, old, next events.LB) error {
	was := map[string]events.Backend{}
	for _, b := range old.Backends {
		was[b.Name] = b
	}
	now := map[string]events.Backend{}
	for _, b := range next.Backends {
		now[b.Name] = b
	}
	for _, b := range old.Backends {
		if nb, ok := now[b.Name]; !ok || nb != b {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := api.RemoveServer(dctx, "be", b.Name)
			cancel()
			if err != nil {
				return err
			}
		}
	}
	for _, b := range next.Backends {
		if ob, ok := was[b.Name]; !ok || ob != b {
			if err := api.AddServer(ctx, "be", b.Name, b.Host, b.Port); err != nil {
				return err
			}
		}
	}
	return nil
}

// modes are the balancing modes of a kind of load balancer; the first is the default.
func modes(kind string) []string {
	if kind == "nginx" {
		return NginxModes
	}
	return HAProxyModes
}

// component is how a kind of load balancer checks and reloads its files.
func component(kind string) svc.Component {
	if kind == "nginx" {
		return svc.Component{Name: "nginx", Unit: "nginx", Check: "nginx -t -q", Before: nginx.Before, Settle: nginx.Settle}
	}
	return svc.Component{Name: "haproxy", Unit: "haproxy", Check: "haproxy -c -q -f " + haproxyConfig}
}

// files is a load balancer's whole configuration: the rendered files, and the
// certificate and key when they are being (re)placed. A key is written only
// into the container, never into skein's state, logs or events.
func files(lb events.LB, pair *pemPair) ([]svc.File, error) {
	if lb.Kind == "nginx" {
		main, err := RenderNginxMain(lb)
		if err != nil {
			return nil, workers.Invalid("%v", err)
		}
		site, err := RenderNginx(lb)
		if err != nil {
			return nil, workers.Invalid("%v", err)
		}
		out := []svc.File{{Path: nginxMain, Data: []byte(main), Mode: 0o644}, {Path: nginxSite, Data: []byte(site), Mode: 0o644}}
		if pair != nil {
			out = append(out, svc.File{Path: nginxCert, Data: pair.cert, Mode: 0o644}, svc.File{Path: nginxKey, Data: pair.key, Mode: 0o600})
		}
		return out, nil
	}
	cfg, err := RenderHAProxy(lb)
	if err != nil {
		return nil, workers.Invalid("%v", err)
	}
	out := []svc.File{{Path: haproxyConfig, Data: []byte(cfg), Mode: 0o644}}
	if pair != nil {
		out = append(out, svc.File{Path: haproxyPEM, Data: append(append(append([]byte(nil), pair.cert...), '\n'), pair.key...), Mode: 0o600})
	}
	return out, nil
}

// pemPair is a certificate and its key, opened: it lives only in memory and in
// the load balancer's container.
type pemPair struct {
	cert, key []byte
}

// openPair opens the key sealed to this agent and checks that it makes a pair
// with the certificate; nil when no TLS was given.
func (w *Worker) openPair(t *events.TLSPair) (*pemPair, error) {
	if t == nil {
		return nil, nil
	}
	if w.host.Secrets == nil {
		return nil, workers.Internal("this agent cannot open sealed secrets")
	}
	key, err := w.host.Secrets.Open(t.Key)
	if err != nil {
		return nil, workers.Invalid("the TLS key: %v", err)
	}
	if _, err := tls.X509KeyPair([]byte(t.Cert), key); err != nil {
		return nil, workers.Invalid("the certificate and key do not make a pair: %v", err)
	}
	return &pemPair{cert: []byte(t.Cert), key: key}, nil
}

// haproxyConfig is a haproxy load balancer's configuration file.
const haproxyConfig = "/etc/haproxy/haproxy.cfg"

func (w *Worker) publish(ctx context.Context, ch events.LBChange) {
	if err := w.cfg.Publisher.Publish(ctx, events.TypeLBChanged, ch); err != nil {
		w.cfg.Log.Warn().Err(err).Msg("publishing event")
	}
}
