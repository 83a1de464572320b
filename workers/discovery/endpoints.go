package discovery

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
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
	if cur, err := w.endpoints.Store.FindByName(ctx, name); err != nil {
		return none, workers.FromStore(err, "endpoint "+name)
	} else if cur == nil || cur.Value.Command != req.ID() {
		if err := w.host.Containers.CheckAddress(ctx, name, p.IP); err != nil {
			return none, err
		}
	}
	e, err := svc.Reserve(ctx, req, w.host, w.endpoints, events.Endpoint{Resource: events.Resource{Name: name}, IP: p.IP})
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
	files := []svc.File{
		{Path: consulConfigPath, Data: []byte(conf), Mode: 0o644},
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
	if err := w.awaitConsul(ctx, req, name, p.IP, len(join) > 0); err != nil {
		return none, err
	}
	ep, err := svc.Ready(ctx, w.endpoints, e)
	if err != nil {
		return none, err
	}
	w.publish(ctx, events.TypeEndpointAdded, events.EndpointEvent{Name: name, IP: p.IP})
	return ep, nil
}

// awaitConsul waits until the endpoint's Consul has a leader and, when it
// joined others, counts as a raft voter.
func (w *Worker) awaitConsul(ctx context.Context, req *workers.Request, name, ip string, joined bool) error {
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
		voters, err := consul.Voters(ctx, addr)
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
		_, _ = w.host.Runtime.Exec(ctx, p.Name, "consul", "leave")
	})
	if err != nil {
		return ep, err
	}
	w.publish(ctx, events.TypeEndpointDeleted, events.EndpointEvent{Name: ep.Name, IP: ep.IP})
	return ep, nil
}
