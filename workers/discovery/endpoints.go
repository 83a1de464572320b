package discovery

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/internal/validate"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/svc"
)

// endpointReady bounds the wait for a new endpoint's Consul to elect a leader.
const endpointReady = 90 * time.Second

// consulComponent is how an endpoint's Consul takes its configuration.
var consulComponent = svc.Component{Name: "consul", Unit: "skein-consul", Check: "consul validate /etc/consul.d"}

// endpointName is the name an endpoint gets: -n, or consul-<last octet of its IP>.
func endpointName(p events.EndpointAdd) string {
	if p.Name != "" {
		return p.Name
	}
	if ip, err := netip.ParseAddr(p.IP); err == nil && ip.Is4() {
		return fmt.Sprintf("consul-%d", ip.As4()[3])
	}
	return "consul"
}

// AddEndpoint runs a Consul server in a container at a static address on this
// server, joined to the endpoints that exist. Redelivered, it resumes.
func (w *Worker) AddEndpoint(ctx context.Context, req *workers.Request, p events.EndpointAdd) (events.Endpoint, error) {
	var none events.Endpoint
	ip, err := netip.ParseAddr(p.IP)
	if err != nil || !ip.Is4() {
		return none, workers.Invalid("%q is not an IPv4 address", p.IP)
	}
	name := endpointName(p)
	mgmt, err := w.management(p.Management)
	if err != nil {
		return none, err
	}
	if cur, err := w.endpoints.Store.FindByName(ctx, name); err != nil {
		return none, workers.FromStore(err, "endpoint "+name)
	} else if cur == nil || cur.Value.Command != req.ID() {
		if err := w.host.Containers.CheckAddress(ctx, name, p.IP); err != nil {
			return none, err
		}
	}
	e, err := svc.Reserve(ctx, req, w.host, w.endpoints, events.Endpoint{Resource: events.Resource{Name: name}, IP: p.IP, Management: p.Management})
	if err != nil {
		return none, err
	}
	if e.Value.Status == events.StatusReady {
		return e.Value, nil
	}
	join := w.joinAddrs(ctx, name)
	if _, err := svc.Launch(ctx, req, w.host, name, p.IP); err != nil {
		return none, err
	}
	req.Progress("consul", "configuring consul (joining "+orNone(join)+")")
	conf, err := ConsulConfig(name, p.IP, join)
	if err != nil {
		return none, workers.Invalid("%v", err)
	}
	acl, err := ConsulACL(mgmt)
	if err != nil {
		return none, workers.Invalid("%v", err)
	}
	files := []svc.File{
		{Path: consulConfigPath, Data: []byte(conf), Mode: 0o644},
		{Path: consulACLPath, Data: []byte(acl), Mode: 0o600},
		{Path: consulTokenPath, Data: []byte(mgmt + "\n"), Mode: 0o600},
		{Path: consulUnitPath, Data: []byte(ConsulUnit), Mode: 0o644},
	}
	if _, err := w.host.Runtime.Exec(ctx, name, "mkdir", "-p", "/var/lib/consul"); err != nil {
		return none, workers.Transient("preparing consul's data directory: %v", err)
	}
	applied, err := svc.Apply(ctx, w.host.Runtime, name, consulComponent, files, svc.Reload, e.Value.Applied)
	if err != nil {
		return none, err
	}
	e.Value.Applied = applied
	if err := w.awaitConsul(ctx, req, name, p.IP, mgmt, len(join) > 0); err != nil {
		return none, err
	}
	if err := w.openDNS(ctx, req, p.IP, mgmt); err != nil {
		return none, err
	}
	ep, err := svc.Ready(ctx, w.endpoints, e)
	if err != nil {
		return none, err
	}
	// The agents get their tokens before addep returns: what waited for an
	// endpoint is published at once.
	req.Progress("tokens", "giving every server's agent a consul token")
	if err := w.mint(ctx, ep); err != nil {
		w.cfg.Log.Warn().Err(err).Msg("minting consul tokens (retried every 5s)")
	}
	w.publish(ctx, events.TypeEndpointAdded, events.EndpointEvent{Name: name, IP: p.IP})
	return ep, nil
}

// awaitConsul waits until the endpoint's Consul has a leader and, when it
// joined others, counts as a raft voter.
func (w *Worker) awaitConsul(ctx context.Context, req *workers.Request, name, ip, mgmt string, joined bool) error {
	req.Progress("leader", "waiting for consul to elect a leader")
	addr := fmt.Sprintf("%s:%d", ip, HTTPPort)
	deadline := time.Now().Add(endpointReady)
	for {
		leader, err := consul.Leader(ctx, addr)
		if err == nil && leader != "" {
			break
		}
		if time.Now().After(deadline) {
			return workers.Transient("consul at %s has no leader after %s (last error: %v)", addr, endpointReady, err)
		}
		if sleep(ctx, 250*time.Millisecond); ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if !joined {
		return nil
	}
	// Joined, a server starts as a non-voter; it counts for the quorum once promoted.
	req.Progress("voter", "waiting to become a raft voter")
	for {
		voters, err := consul.Voters(ctx, addr, mgmt)
		if err == nil && contains(voters, name) {
			return nil
		}
		if time.Now().After(deadline) {
			return workers.Transient("endpoint %s did not become a raft voter in %s (last error: %v)", name, endpointReady, err)
		}
		if sleep(ctx, 250*time.Millisecond); ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// management opens the management token sealed to this agent.
func (w *Worker) management(s *events.Sealed) (string, error) {
	if s == nil || s.Box == "" {
		return "", workers.Invalid("the endpoint needs the endpoints' management token sealed to this server's agent: use a skein CLI as new as the agent")
	}
	if w.host.Secrets == nil {
		return "", workers.Internal("this agent has no key to open secrets with")
	}
	m, err := w.host.Secrets.Open(*s)
	if err != nil {
		return "", workers.Invalid("the management token is not sealed to this server's agent (%v): the CLI seals it to the key in the server's heartbeat", err)
	}
	if err := validate.UUID.Check(string(m)); err != nil {
		return "", workers.Invalid("the management token is not a UUID")
	}
	return string(m), nil
}

// openDNS lets anonymous requests, DNS among them, read the catalog, and
// nothing else. Consul takes a moment after its election to start its ACLs.
func (w *Worker) openDNS(ctx context.Context, req *workers.Request, ip, mgmt string) error {
	req.Progress("acl", "opening DNS and catalog reads to anonymous requests")
	acl, err := consul.NewACL(fmt.Sprintf("%s:%d", ip, HTTPPort), mgmt)
	if err != nil {
		return workers.Internal("%v", err)
	}
	deadline := time.Now().Add(endpointReady)
	for {
		err := acl.EnsurePolicy(ctx, anonymousPolicy)
		if err == nil {
			err = acl.EnsureToken(ctx, consul.AnonymousToken, "", "anonymous: DNS and catalog reads (skein)", anonymousPolicy.Name)
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return workers.Transient("setting the anonymous policy at %s: %v", ip, err)
		}
		if sleep(ctx, 500*time.Millisecond); ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none: bootstrapping"
	}
	return strings.Join(s, ", ")
}

// joinAddrs are the addresses of the other ready endpoints.
func (w *Worker) joinAddrs(ctx context.Context, self string) []string {
	all, err := w.endpoints.Store.Values(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range all {
		if e.Name != self && e.Status == events.StatusReady {
			out = append(out, e.IP)
		}
	}
	sort.Strings(out)
	return out
}

// DeleteEndpoint makes an endpoint leave the Consul cluster, then deletes it.
func (w *Worker) DeleteEndpoint(ctx context.Context, req *workers.Request, p events.EndpointRef) (events.Endpoint, error) {
	ep, err := svc.Remove(ctx, req, w.host, w.endpoints, p.Name, func(e events.Endpoint) {
		// A graceful leave shrinks the raft peer set, so the others keep their quorum.
		req.Progress("leave", "leaving the consul cluster")
		_, _ = w.host.Runtime.Exec(ctx, p.Name, "consul", "leave", "-token-file="+consulTokenPath)
	})
	if err != nil {
		return ep, err
	}
	// Its last endpoint gone, this server mints no more: the tokens it made
	// may not exist in the endpoints that remain (or in the next ones).
	if left, err := w.endpoints.Store.ListServer(ctx, w.host.Server); err == nil && len(left) == 0 {
		w.dropTokens(ctx)
	}
	w.publish(ctx, events.TypeEndpointDeleted, events.EndpointEvent{Name: ep.Name, IP: ep.IP})
	return ep, nil
}

// Reseal answers the endpoints' management token sealed to another agent's
// key, for the CLI to give a new endpoint (a query: only the admin may ask).
func (w *Worker) Reseal(ctx context.Context, req *workers.Request, p events.EndpointReseal) (events.Sealed, error) {
	var none events.Sealed
	e, err := w.endpoints.Store.Find(ctx, bus.Key(w.host.Server, p.Name))
	if err != nil {
		return none, workers.FromStore(err, "endpoint "+p.Name)
	}
	if e == nil {
		return none, workers.NotFound("no endpoint named %s on server %s: `skein listep` shows them", p.Name, w.host.Server)
	}
	if e.Value.Management == nil {
		return none, workers.Invalid("endpoint %s holds no management token: it was made by an older skein; remove it and add it again", p.Name)
	}
	m, err := w.management(e.Value.Management)
	if err != nil {
		return none, err
	}
	s, err := seal.To(p.To, []byte(m))
	if err != nil {
		return none, workers.Invalid("sealing to %s: %v", p.To, err)
	}
	return s, nil
}

// Resolvers are the DNS addresses (IP:PORT) of the ready Consul endpoints,
// for a load balancer or web server that resolves Consul names; with none it
// answers the fix.
func Resolvers(ctx context.Context, eps *bus.Store[events.Endpoint]) ([]string, error) {
	all, err := eps.Values(ctx)
	if err != nil {
		return nil, workers.Transient("reading endpoints: %v", err)
	}
	var out []string
	for _, ep := range all {
		if ep.Status == events.StatusReady {
			out = append(out, fmt.Sprintf("%s:%d", ep.IP, DNSPort))
		}
	}
	if len(out) == 0 {
		return nil, workers.Invalid("a Consul name needs a Consul endpoint to resolve it: add one with `skein addep SERVER IP`")
	}
	sort.Strings(out)
	return out, nil
}
