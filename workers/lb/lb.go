// Package lb runs load balancers on one server: haproxy in a service container,
// its configuration rendered from skein's state by a pure function, checked by
// haproxy itself before it replaces the running one, and rolled back when the
// reload fails.
package lb

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/haproxy"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/containers"
	"github.com/skeinhq/skein/workers/discovery"
)

// Paths in a load balancer's container.
const (
	haproxyConfig = "/etc/haproxy/haproxy.cfg"
	haproxyNext   = "/etc/haproxy/haproxy.cfg.next"
	haproxyPrev   = "/etc/haproxy/haproxy.cfg.prev"
	nginxNext     = "/etc/nginx/skein/site.next"
	nginxPrev     = "/etc/nginx/skein/site.prev"
)

// Config configures the load balancer worker of one server.
type Config struct {
	// Server is the server's name.
	Server string
	// Image is the image load balancers run from.
	Image string
	// Runtime is the server's container runtime.
	Runtime container.Runtime
	// Containers launches and deletes load balancer containers.
	Containers *containers.Worker
	// Publisher publishes the worker's events.
	Publisher *bus.Publisher
	// Log is the worker's logger.
	Log zerolog.Logger
}

// Worker is the load balancer worker of one server.
type Worker struct {
	cfg Config
	js  jetstream.JetStream
	kv  jetstream.KeyValue
}

// New returns the load balancer worker; js gives it its bucket.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Worker, error) {
	kv, err := js.KeyValue(ctx, bus.BucketLBs)
	if err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, js: js, kv: kv}, nil
}

// Register adds the worker's handlers to the runtime, in one visible block.
func (w *Worker) Register(r *workers.Runtime) {
	r.Handle(events.TypeLBAdd, w.Add)
	r.Handle(events.TypeLBDelete, w.Delete)
	r.Handle(events.TypeLBBackendsAdd, w.AddBackends)
	r.Handle(events.TypeLBBackendsDelete, w.DeleteBackends)
	r.Handle(events.TypeLBSet, w.Set)
}

// Add runs a load balancer in a container on this server with no backends yet.
func (w *Worker) Add(ctx context.Context, req *workers.Request) (any, error) {
	var p events.LBAdd
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	if p.Kind == "nginx" {
		if p.URL == "" || len(p.Backends) == 0 {
			return nil, workers.Invalid("an nginx load balancer needs a URL and at least one backend: addlb nginx SERVER -u URL -b IP:PORT")
		}
	} else if p.URL != "" || len(p.Backends) > 0 {
		return nil, workers.Invalid("-u and -b are for nginx load balancers; haproxy ones get backends with addbackends")
	}
	if p.TLS != nil {
		if _, err := tls.X509KeyPair([]byte(p.TLS.Cert), []byte(p.TLS.Key)); err != nil {
			return nil, workers.Invalid("the certificate and key do not make a pair: %v", err)
		}
	}
	var resolvers []string
	for _, b := range p.Backends {
		if IsName(b.Host) {
			if !strings.HasSuffix(b.Host, ".consul") {
				return nil, workers.Invalid("backend %q is neither an IPv4 address nor a Consul name (NAME.service.consul)", b.Host)
			}
			rs, err := w.endpointResolvers(ctx)
			if err != nil {
				return nil, err
			}
			resolvers = rs
		}
	}
	if err := checkNginxNames(events.LB{Kind: p.Kind, Backends: p.Backends}); err != nil {
		return nil, err
	}
	id := req.Envelope.ID
	if p.Name == "" {
		name, err := w.freeName(ctx, p.Kind)
		if err != nil {
			return nil, err
		}
		p.Name = name
	}
	lb, rev, err := w.get(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	if lb != nil && lb.Command != id {
		return nil, workers.Conflict("a load balancer named %s already exists on server %s: pick another name with -n", p.Name, lb.Server)
	}
	if lb == nil {
		rec := events.LB{Name: p.Name, Kind: p.Kind, Server: w.cfg.Server, Status: events.EndpointCreating, Mode: modes(p.Kind)[0], URL: p.URL, TLS: p.TLS != nil, Resolvers: resolvers,
			Backends: append([]events.Backend{}, p.Backends...), Command: id, Updated: time.Now().UTC()}
		b, _ := json.Marshal(rec)
		if rev, err = w.kv.Create(ctx, p.Name, b); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return nil, workers.Conflict("a load balancer named %s already exists: pick another name with -n", p.Name)
			}
			return nil, workers.Transient("reserving %s: %v", p.Name, err)
		}
		lb = &rec
	}
	if lb.Status == events.EndpointReady {
		return *lb, nil
	}
	req.Progress("container", fmt.Sprintf("launching %s (%s) on %s", p.Name, w.cfg.Image, w.cfg.Server))
	if _, err := w.cfg.Containers.LaunchContainer(ctx, req, events.Launch{Name: p.Name, Image: w.cfg.Image}); err != nil {
		var we *workers.Error
		if errors.As(err, &we) && !we.Transient {
			_ = w.kv.Delete(ctx, p.Name, jetstream.LastRevision(rev))
		}
		return nil, err
	}
	req.Progress("configure", "configuring "+p.Kind)
	if p.TLS != nil {
		if err := w.writeTLS(ctx, *lb, p.TLS); err != nil {
			return nil, err
		}
	}
	if err := w.apply(ctx, *lb); err != nil {
		if errors.Is(err, errRefused) {
			// A configuration the tool refuses at creation will not get better: undo.
			_, _ = w.cfg.Containers.DeleteContainer(ctx, req, p.Name)
			_ = w.kv.Delete(ctx, p.Name)
		}
		return nil, err
	}
	if p.Kind == "haproxy" {
		// The runtime API, reachable from the agent: backend changes need no reload.
		if err := w.cfg.Runtime.ExposeSocket(ctx, p.Name, w.socketPath(p.Name), "/run/haproxy/admin.sock"); err != nil {
			return nil, workers.Transient("exposing the haproxy socket of %s: %v", p.Name, err)
		}
	}
	lb.Status = events.EndpointReady
	if err := w.save(ctx, lb, "added"); err != nil {
		return nil, err
	}
	return *lb, nil
}

// Delete removes a load balancer and its container.
func (w *Worker) Delete(ctx context.Context, req *workers.Request) (any, error) {
	var p events.LBRef
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	lb, _, err := w.get(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	if lb == nil {
		if req.Attempt > 1 {
			return events.LB{Name: p.Name, Server: w.cfg.Server, Status: events.EndpointReady, Backends: []events.Backend{}, Updated: time.Now().UTC()}, nil
		}
		return nil, workers.NotFound("no load balancer named %s: `skein listlbs` shows them", p.Name)
	}
	if _, err := w.cfg.Containers.DeleteContainer(ctx, req, p.Name); err != nil {
		return nil, err
	}
	if err := w.kv.Delete(ctx, p.Name); err != nil {
		return nil, workers.Transient("forgetting %s: %v", p.Name, err)
	}
	w.publish(ctx, events.LBChange{Name: p.Name, Change: "deleted"})
	return *lb, nil
}

// AddBackends adds backends; a backend with a name already there is replaced.
func (w *Worker) AddBackends(ctx context.Context, req *workers.Request) (any, error) {
	var p events.LBBackends
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	return w.change(ctx, p.LB, "backends", func(lb *events.LB) error {
		for _, nb := range p.Backends {
			if nb.Host == "" || nb.Port == 0 {
				return workers.Invalid("backend %s needs NAME:IP:PORT", nb.Name)
			}
			if IsName(nb.Host) {
				if !strings.HasSuffix(nb.Host, ".consul") {
					return workers.Invalid("backend %s: %q is neither an IPv4 address nor a Consul name (NAME.service.consul)", nb.Name, nb.Host)
				}
				if len(lb.Resolvers) == 0 {
					rs, err := w.endpointResolvers(ctx)
					if err != nil {
						return err
					}
					lb.Resolvers = rs
				}
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
func (w *Worker) DeleteBackends(ctx context.Context, req *workers.Request) (any, error) {
	var p events.LBBackendNames
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	return w.change(ctx, p.LB, "backends", func(lb *events.LB) error {
		drop := map[string]bool{}
		for _, n := range p.Names {
			drop[n] = true
		}
		kept := lb.Backends[:0]
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
func (w *Worker) Set(ctx context.Context, req *workers.Request) (any, error) {
	var p events.LBSet
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	return w.change(ctx, p.LB, p.Key, func(lb *events.LB) error {
		switch p.Key {
		case "resolvers":
			var rs []string
			for _, r := range strings.Split(p.Value, ",") {
				host, port, err := net.SplitHostPort(strings.TrimSpace(r))
				if err != nil || net.ParseIP(host) == nil || port == "" {
					return workers.Invalid("resolver %q: want IP:PORT, e.g. 10.77.1.10:8600", r)
				}
				rs = append(rs, net.JoinHostPort(host, port))
			}
			lb.Resolvers = rs
			return nil
		case "url":
			if lb.Kind != "nginx" {
				return workers.Invalid("haproxy load balancers answer for any host name: url is for nginx ones")
			}
			if !hostRE.MatchString(p.Value) {
				return workers.Invalid("url %q: want a host name such as mywordpress.org", p.Value)
			}
			lb.URL = p.Value
			return nil
		case "ssl":
			if p.TLS == nil {
				return workers.Invalid("ssl needs a certificate and its key: setlb LB ssl CERT KEY")
			}
			if _, err := tls.X509KeyPair([]byte(p.TLS.Cert), []byte(p.TLS.Key)); err != nil {
				return workers.Invalid("the certificate and key do not make a pair: %v", err)
			}
			if err := w.writeTLS(ctx, *lb, p.TLS); err != nil {
				return err
			}
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

// change edits a ready load balancer, applies the new configuration and only
// then records it: the record always says what is running. Backend changes go
// through haproxy's runtime API (no reload, nothing dropped) with the new file
// written for later restarts; anything else, or a runtime API refusal, reloads.
func (w *Worker) change(ctx context.Context, name, what string, edit func(*events.LB) error) (any, error) {
	lb, _, err := w.get(ctx, name)
	if err != nil {
		return nil, err
	}
	if lb == nil {
		return nil, workers.NotFound("no load balancer named %s: `skein listlbs` shows them", name)
	}
	if lb.Server != w.cfg.Server {
		return nil, workers.Invalid("load balancer %s is on server %s, not %s", name, lb.Server, w.cfg.Server)
	}
	if lb.Status != events.EndpointReady {
		return nil, workers.Transient("load balancer %s is still being created", name)
	}
	next := *lb
	next.Backends = append([]events.Backend(nil), lb.Backends...)
	if err := edit(&next); err != nil {
		return nil, err
	}
	applied := false
	if what == "backends" && next.Kind == "haproxy" {
		if err := w.check(ctx, next); err != nil {
			return nil, err
		}
		if err := w.live(ctx, *lb, next); err != nil {
			w.cfg.Log.Info().Err(err).Str("lb", name).Msg("runtime API change refused; reloading instead")
		} else if err := w.install(ctx, next, false); err != nil {
			return nil, err
		} else {
			applied = true
		}
	}
	if !applied {
		if err := w.apply(ctx, next); err != nil {
			return nil, err
		}
	}
	if err := w.save(ctx, &next, what); err != nil {
		return nil, err
	}
	return next, nil
}

// hostRE is a host name an nginx load balancer can answer for.
var hostRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$`)

// writeTLS puts a certificate and key into the load balancer's container, where
// only its server reads them: they are in no record, log or event.
func (w *Worker) writeTLS(ctx context.Context, lb events.LB, pair *events.TLSPair) error {
	rt := w.cfg.Runtime
	if lb.Kind == "haproxy" {
		if err := rt.PushFile(ctx, lb.Name, haproxyPEM, []byte(pair.Cert+"\n"+pair.Key), 0o600); err != nil {
			return workers.Transient("writing the certificate of %s: %v", lb.Name, err)
		}
		return nil
	}
	if res, err := rt.Exec(ctx, lb.Name, "mkdir", "-p", "/etc/nginx/skein"); err != nil || res.Code != 0 {
		return workers.Transient("preparing %s: %v", lb.Name, err)
	}
	if err := rt.PushFile(ctx, lb.Name, nginxCert, []byte(pair.Cert), 0o644); err != nil {
		return workers.Transient("writing the certificate of %s: %v", lb.Name, err)
	}
	if err := rt.PushFile(ctx, lb.Name, nginxKey, []byte(pair.Key), 0o600); err != nil {
		return workers.Transient("writing the key of %s: %v", lb.Name, err)
	}
	return nil
}

// endpointResolvers are the DNS addresses of the ready Consul endpoints.
func (w *Worker) endpointResolvers(ctx context.Context) ([]string, error) {
	kv, err := w.js.KeyValue(ctx, bus.BucketEndpoints)
	if err != nil {
		return nil, workers.Transient("reading endpoints: %v", err)
	}
	var out []string
	lister, err := kv.ListKeys(ctx)
	if err == nil {
		for k := range lister.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				continue
			}
			var ep events.Endpoint
			if json.Unmarshal(e.Value(), &ep) == nil && ep.Status == events.EndpointReady {
				out = append(out, fmt.Sprintf("%s:%d", ep.IP, discovery.DNSPort))
			}
		}
	}
	if len(out) == 0 {
		return nil, workers.Invalid("a Consul-name backend needs a Consul endpoint to resolve it: add one with `skein addep SERVER IP`")
	}
	sort.Strings(out)
	return out, nil
}

// socketPath is where the agent reaches a load balancer's haproxy runtime API.
func (w *Worker) socketPath(name string) string {
	return fmt.Sprintf("/run/skein/lb/%s-%s.sock", w.cfg.Server, name)
}

// live changes the running haproxy's servers from old's backends to next's.
func (w *Worker) live(ctx context.Context, old, next events.LB) error {
	api := haproxy.Client{Socket: w.socketPath(old.Name)}
	was := map[string]events.Backend{}
	for _, b := range old.Backends {
		was[b.Name] = b
	}
	now := map[string]events.Backend{}
	for _, b := range next.Backends {
		now[b.Name] = b
	}
	for _, b := range append(append([]events.Backend(nil), old.Backends...), next.Backends...) {
		if IsName(b.Host) {
			return errors.New("Consul-name backends are followed by resolvers: reload")
		}
	}
	for name, b := range was {
		if nb, ok := now[name]; !ok || nb != b {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := api.RemoveServer(dctx, "be", name)
			cancel()
			if err != nil {
				return err
			}
		}
	}
	for name, b := range now {
		if ob, ok := was[name]; !ok || ob != b {
			if err := api.AddServer(ctx, "be", b.Name, b.Host, b.Port); err != nil {
				return err
			}
		}
	}
	return nil
}

// workersSed is the sed expression that sets nginx's worker_processes, or none.
func workersSed(lb events.LB) string {
	if lb.Workers == 0 {
		return ""
	}
	return fmt.Sprintf("-e 's/^worker_processes .*;/worker_processes %d;/'", lb.Workers)
}

// errRefused marks a configuration the load balancer's own tool refused.
var errRefused = errors.New("refused by the tool")

// modes are the balancing modes of a kind of load balancer; the first is the default.
func modes(kind string) []string {
	if kind == "nginx" {
		return NginxModes
	}
	return HAProxyModes
}

// check writes the rendered configuration next to the running one and has the
// tool check it (haproxy -c, nginx -t); a refusal leaves the running one untouched.
func (w *Worker) check(ctx context.Context, lb events.LB) error {
	rt := w.cfg.Runtime
	var cfg, next string
	var argv []string
	if lb.Kind == "nginx" {
		cfg, next = RenderNginx(lb), nginxNext
		// nginx -t checks a whole configuration: the main file with the candidate site.
		argv = []string{"sh", "-c", fmt.Sprintf("sed -e 's#/etc/nginx/sites-enabled/\\*#%s#' %s /etc/nginx/nginx.conf > /etc/nginx/skein/test.conf && nginx -t -q -c /etc/nginx/skein/test.conf", nginxNext, workersSed(lb))}
		if res, err := rt.Exec(ctx, lb.Name, "mkdir", "-p", "/etc/nginx/skein"); err != nil || res.Code != 0 {
			return workers.Transient("preparing %s: %v", lb.Name, err)
		}
	} else {
		cfg, next = RenderHAProxy(lb), haproxyNext
		argv = []string{"haproxy", "-c", "-f", haproxyNext}
	}
	if err := rt.PushFile(ctx, lb.Name, next, []byte(cfg), 0o644); err != nil {
		return workers.Transient("writing the configuration of %s: %v", lb.Name, err)
	}
	res, err := rt.Exec(ctx, lb.Name, argv...)
	if err != nil {
		return workers.Transient("checking the configuration of %s: %v", lb.Name, err)
	}
	if res.Code != 0 {
		return fmt.Errorf("%w: %w", errRefused, workers.Invalid("%s refused the new configuration of %s (the old one keeps serving): %s", lb.Kind, lb.Name, strings.TrimSpace(string(res.Stdout)+string(res.Stderr))))
	}
	return nil
}

// apply checks and installs a configuration with a reload.
func (w *Worker) apply(ctx context.Context, lb events.LB) error {
	if err := w.check(ctx, lb); err != nil {
		return err
	}
	return w.install(ctx, lb, true)
}

// install makes the checked configuration the running one's file, keeping the
// previous as .prev; with reload, the service reloads gracefully and the previous
// file is restored if the reload fails.
func (w *Worker) install(ctx context.Context, lb events.LB, reload bool) error {
	conf, prev, next, unit := haproxyConfig, haproxyPrev, haproxyNext, "haproxy"
	if lb.Kind == "nginx" {
		conf, prev, next, unit = nginxSite, nginxPrev, nginxNext, "nginx"
	}
	main := ":"
	if lb.Kind == "nginx" && lb.Workers > 0 {
		main = fmt.Sprintf("sed -i %s /etc/nginx/nginx.conf", workersSed(lb))
	}
	script := fmt.Sprintf(`set -e
[ -f %[1]s ] && cp %[1]s %[2]s || true
cp %[3]s %[1]s
%[6]s
[ %[4]q = yes ] || exit 0
if systemctl is-active -q %[5]s; then
  systemctl reload %[5]s || { [ -f %[2]s ] && cp %[2]s %[1]s; systemctl reload %[5]s || true; exit 3; }
else
  systemctl enable -q %[5]s 2>/dev/null || true
  systemctl restart %[5]s || exit 4
fi`, conf, prev, next, map[bool]string{true: "yes", false: "no"}[reload], unit, main)
	res, err := w.cfg.Runtime.Exec(ctx, lb.Name, "sh", "-c", script)
	if err != nil {
		return workers.Transient("installing the configuration of %s: %v", lb.Name, err)
	}
	switch res.Code {
	case 0:
		return nil
	case 3:
		return workers.Invalid("%s of %s failed to reload; the previous configuration was restored: %s", unit, lb.Name, strings.TrimSpace(string(res.Stderr)))
	default:
		return workers.Transient("starting %s in %s: exit %d: %s", unit, lb.Name, res.Code, strings.TrimSpace(string(res.Stderr)))
	}
}

func (w *Worker) save(ctx context.Context, lb *events.LB, what string) error {
	lb.Updated = time.Now().UTC()
	b, _ := json.Marshal(lb)
	if _, err := w.kv.Put(ctx, lb.Name, b); err != nil {
		return workers.Transient("recording %s: %v", lb.Name, err)
	}
	w.publish(ctx, events.LBChange{Name: lb.Name, Change: what, Backends: len(lb.Backends), Mode: lb.Mode})
	return nil
}

func (w *Worker) publish(ctx context.Context, ch events.LBChange) {
	if err := w.cfg.Publisher.Publish(ctx, events.TypeLBChanged, ch); err != nil {
		w.cfg.Log.Warn().Err(err).Msg("publishing event")
	}
}

// freeName picks KIND-N with the lowest N not taken by a load balancer.
func (w *Worker) freeName(ctx context.Context, kind string) (string, error) {
	taken := map[string]bool{}
	lister, err := w.kv.ListKeys(ctx)
	if err == nil {
		for k := range lister.Keys() {
			taken[k] = true
		}
	} else if !errors.Is(err, jetstream.ErrNoKeysFound) {
		return "", workers.Transient("listing load balancers: %v", err)
	}
	for n := 1; ; n++ {
		if name := fmt.Sprintf("%s-%d", kind, n); !taken[name] {
			return name, nil
		}
	}
}

// get reads a load balancer's record with its revision; nil when there is none.
func (w *Worker) get(ctx context.Context, name string) (*events.LB, uint64, error) {
	e, err := w.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, workers.Transient("reading %s: %v", name, err)
	}
	var lb events.LB
	if err := json.Unmarshal(e.Value(), &lb); err != nil {
		return nil, 0, workers.Transient("bad record of %s: %v", name, err)
	}
	return &lb, e.Revision(), nil
}
