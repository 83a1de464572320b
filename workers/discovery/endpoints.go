package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/workers"
)

// endpointReady bounds the wait for a new endpoint's Consul to elect a leader.
const endpointReady = 90 * time.Second

// AddEndpoint runs a Consul server in a container at a static address on this
// server, joined to the endpoints that exist. Redelivered, it resumes.
func (w *Worker) AddEndpoint(ctx context.Context, req *workers.Request) (any, error) {
	var p events.EndpointAdd
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	ip, err := netip.ParseAddr(p.IP)
	if err != nil || !ip.Is4() {
		return nil, workers.Invalid("%q is not an IPv4 address", p.IP)
	}
	if p.Name == "" {
		p.Name = fmt.Sprintf("consul-%d", ip.As4()[3])
	}
	id := req.Envelope.ID
	ep, rev, err := w.endpoint(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	if ep != nil && ep.Command != id {
		return nil, workers.Conflict("an endpoint named %s already exists on server %s (%s): pick another name with -n", p.Name, ep.Server, ep.IP)
	}
	if ep == nil {
		if err := w.cfg.Containers.CheckAddress(ctx, p.Name, p.IP); err != nil {
			return nil, err
		}
		rec := events.Endpoint{Name: p.Name, Server: w.cfg.Server, IP: p.IP, Status: events.EndpointCreating, Command: id, Updated: time.Now().UTC()}
		b, _ := json.Marshal(rec)
		if rev, err = w.endpoints.Create(ctx, p.Name, b); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return nil, workers.Conflict("an endpoint named %s already exists: pick another name with -n", p.Name)
			}
			return nil, workers.Transient("reserving endpoint %s: %v", p.Name, err)
		}
		ep = &rec
	}
	if ep.Status == events.EndpointReady {
		return *ep, nil
	}
	join := w.joinAddrs(ctx, p.Name)
	req.Progress("container", fmt.Sprintf("launching %s (%s) at %s on %s", p.Name, w.cfg.Image, p.IP, w.cfg.Server))
	if _, err := w.cfg.Containers.LaunchContainer(ctx, req, events.Launch{Name: p.Name, Image: w.cfg.Image, IPv4: p.IP}); err != nil {
		var we *workers.Error
		if errors.As(err, &we) && !we.Transient {
			_ = w.endpoints.Delete(ctx, p.Name, jetstream.LastRevision(rev))
		}
		return nil, err
	}
	req.Progress("consul", "configuring consul (joining "+orNone(join)+")")
	rt := w.cfg.Runtime
	if res, err := rt.Exec(ctx, p.Name, "mkdir", "-p", "/etc/consul.d", "/var/lib/consul"); err != nil || res.Code != 0 {
		return nil, workers.Transient("preparing consul directories: %v %s", err, res.Stderr)
	}
	if err := rt.PushFile(ctx, p.Name, consulConfigPath, []byte(ConsulConfig(p.Name, p.IP, join)), 0o644); err != nil {
		return nil, workers.Transient("writing consul config: %v", err)
	}
	if err := rt.PushFile(ctx, p.Name, consulUnitPath, []byte(ConsulUnit), 0o644); err != nil {
		return nil, workers.Transient("writing consul unit: %v", err)
	}
	if res, err := rt.Exec(ctx, p.Name, "systemctl", "enable", "--now", "skein-consul.service"); err != nil || res.Code != 0 {
		return nil, workers.Transient("starting consul: %v %s", err, res.Stderr)
	}
	req.Progress("leader", "waiting for consul to elect a leader")
	addr := fmt.Sprintf("%s:%d", p.IP, HTTPPort)
	deadline := time.Now().Add(endpointReady)
	for {
		leader, err := consul.Leader(ctx, addr)
		if err == nil && leader != "" {
			break
		}
		if time.Now().After(deadline) {
			return nil, workers.Transient("consul at %s has no leader after %s (last error: %v)", addr, endpointReady, err)
		}
		sleep(ctx, 250*time.Millisecond)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	if len(join) > 0 {
		// Joined, a server starts as a non-voter; it counts for the quorum once promoted.
		req.Progress("voter", "waiting to become a raft voter")
		for {
			voters, err := consul.Voters(ctx, addr)
			if err == nil && contains(voters, p.Name) {
				break
			}
			if time.Now().After(deadline) {
				return nil, workers.Transient("endpoint %s did not become a raft voter in %s (last error: %v)", p.Name, endpointReady, err)
			}
			sleep(ctx, 250*time.Millisecond)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	ep.Status, ep.Updated = events.EndpointReady, time.Now().UTC()
	b, _ := json.Marshal(ep)
	if _, err := w.endpoints.Put(ctx, p.Name, b); err != nil {
		return nil, workers.Transient("recording endpoint %s: %v", p.Name, err)
	}
	w.publish(ctx, events.TypeEndpointAdded, events.EndpointEvent{Name: p.Name, IP: p.IP})
	return *ep, nil
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
	var out []string
	lister, err := w.endpoints.ListKeys(ctx)
	if err != nil {
		return nil
	}
	for k := range lister.Keys() {
		if k == self {
			continue
		}
		if e, _, err := w.endpoint(ctx, k); err == nil && e != nil && e.Status == events.EndpointReady {
			out = append(out, e.IP)
		}
	}
	sort.Strings(out)
	return out
}

// DeleteEndpoint makes an endpoint leave the Consul cluster, then deletes it.
func (w *Worker) DeleteEndpoint(ctx context.Context, req *workers.Request) (any, error) {
	var p events.EndpointRef
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	ep, _, err := w.endpoint(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	if ep == nil {
		if req.Attempt > 1 {
			return events.Endpoint{Name: p.Name, Server: w.cfg.Server, Status: events.EndpointReady, Updated: time.Now().UTC()}, nil
		}
		return nil, workers.NotFound("no endpoint named %s: `skein listep` shows them", p.Name)
	}
	if ep.Server != w.cfg.Server {
		return nil, workers.Invalid("endpoint %s is on server %s, not %s", p.Name, ep.Server, w.cfg.Server)
	}
	// A graceful leave shrinks the raft peer set, so the others keep their quorum.
	req.Progress("leave", "leaving the consul cluster")
	_, _ = w.cfg.Runtime.Exec(ctx, p.Name, "consul", "leave")
	req.Progress("delete", "deleting container "+p.Name)
	if _, err := w.cfg.Containers.DeleteContainer(ctx, req, p.Name); err != nil {
		return nil, err
	}
	if err := w.endpoints.Delete(ctx, p.Name); err != nil {
		return nil, workers.Transient("forgetting endpoint %s: %v", p.Name, err)
	}
	w.publish(ctx, events.TypeEndpointDeleted, events.EndpointEvent{Name: p.Name, IP: ep.IP})
	return *ep, nil
}

// endpoint reads an endpoint's record; nil when there is none.
func (w *Worker) endpoint(ctx context.Context, name string) (*events.Endpoint, uint64, error) {
	e, err := w.endpoints.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, workers.Transient("reading endpoint %s: %v", name, err)
	}
	var ep events.Endpoint
	if err := json.Unmarshal(e.Value(), &ep); err != nil {
		return nil, 0, nil
	}
	return &ep, e.Revision(), nil
}
