package mesh

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// Modes of the mesh.
const (
	// ModeRouted routes each peer's container subnet via the peer's address.
	ModeRouted = "routed"
	// ModeOff leaves the route table alone.
	ModeOff = "off"
)

// Config configures the mesh of one server.
type Config struct {
	// Server is this server's name.
	Server string
	// Mode is ModeRouted or ModeOff.
	Mode string
	// Heartbeats are the servers' heartbeats, where peers are learned.
	Heartbeats *bus.Store[events.Heartbeat]
	// Router is this server's route table.
	Router Router
	// Self is this server's address toward its peers, its container subnet
	// and its bridge's address; ok is false until they are known.
	Self func() (addr netip.Addr, subnet netip.Prefix, gateway netip.Addr, ok bool)
	// DownAfter is how old a heartbeat may be before its server counts as down.
	DownAfter time.Duration
	// Log is the worker's logger.
	Log zerolog.Logger
}

// Worker keeps this server's routes to its peers' container subnets.
type Worker struct {
	cfg Config

	mu     sync.Mutex
	status events.Mesh
}

// New returns the mesh worker.
func New(cfg Config) *Worker {
	if cfg.Mode == "" {
		cfg.Mode = ModeRouted
	}
	return &Worker{cfg: cfg, status: events.Mesh{Mode: cfg.Mode}}
}

// Status is the mesh as this server has it, for its heartbeat.
func (w *Worker) Status() events.Mesh {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.status
	s.Peers = slices.Clone(s.Peers)
	return s
}

// Problems are what keeps a peer from being reached, each with its fix.
func (w *Worker) Problems() []string {
	var out []string
	for _, p := range w.Status().Peers {
		if p.State == StateRefused {
			out = append(out, fmt.Sprintf("peer %s: %s", p.Name, p.Problem))
		}
	}
	if s := w.Status(); s.Problem != "" && s.Mode != ModeOff {
		out = append(out, "mesh: "+s.Problem)
	}
	return out
}

// Run follows the heartbeats and converges the routes on every change of a
// peer's address, subnet or liveness, and every 10 s, until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	if w.cfg.Mode == ModeOff {
		return
	}
	peers := map[string]events.Heartbeat{}
	var last string
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		ch, err := w.cfg.Heartbeats.Watch(ctx)
		if err != nil {
			w.cfg.Log.Warn().Err(err).Msg("watching the heartbeats")
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		synced := false
	follow:
		for {
			select {
			case <-ctx.Done():
				return
			case c, ok := <-ch:
				if !ok {
					break follow // the watch broke: start it again
				}
				switch {
				case c.Synced:
					synced = true
				case c.Value == nil:
					delete(peers, c.Key)
				default:
					peers[c.Key] = *c.Value
				}
				if !synced {
					continue
				}
				// Most beats change only figures: converge when what routes depend on changed.
				if k := w.key(peers); k != last {
					last = k
					w.Converge(ctx, values(peers))
				}
			case <-tick.C:
				if synced {
					last = w.key(peers)
					w.Converge(ctx, values(peers))
				}
			}
		}
	}
}

// key is what the routes depend on in the heartbeats.
func (w *Worker) key(peers map[string]events.Heartbeat) string {
	names := make([]string, 0, len(peers))
	for n := range peers {
		names = append(names, n)
	}
	sort.Strings(names)
	k := ""
	now := time.Now()
	for _, n := range names {
		p := peers[n]
		k += fmt.Sprintf("%s %s %s %v|", n, p.Address, p.Subnet, p.Status == "up" && now.Sub(p.Time) <= w.cfg.DownAfter)
	}
	return k
}

func values(m map[string]events.Heartbeat) []events.Heartbeat {
	out := make([]events.Heartbeat, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// Converge makes the routes skein keeps equal to the plan for peers: stale
// ones removed, missing or changed ones made, forwarding on while any exist.
func (w *Worker) Converge(ctx context.Context, peers []events.Heartbeat) {
	st := events.Mesh{Mode: w.cfg.Mode}
	defer func() {
		w.mu.Lock()
		w.status = st
		w.mu.Unlock()
	}()
	addr, subnet, gw, ok := w.cfg.Self()
	if !ok {
		return // the next beat knows them
	}
	addrs, others, err := w.cfg.Router.Local()
	if err != nil {
		st.Problem = err.Error()
		return
	}
	// An agent whose container bridge is elsewhere (another network
	// namespace, say) does not route for it.
	if !slices.ContainsFunc(addrs, func(a netip.Prefix) bool { return a.Addr() == gw }) {
		st.Mode, st.Problem = ModeOff, fmt.Sprintf("the container bridge %s is not on this host: routes are left to the host that has it", gw)
		return
	}
	var conn []netip.Prefix
	for _, a := range addrs {
		if c := a.Masked(); c != subnet.Masked() {
			conn = append(conn, c)
		}
	}
	routes, links := Plan(Local{Name: w.cfg.Server, Address: addr, Subnet: subnet, Connected: conn, Routes: others}, peers, time.Now(), w.cfg.DownAfter)
	have, err := w.cfg.Router.Routes()
	if err != nil {
		st.Problem = err.Error()
		return
	}
	failed := map[netip.Prefix]string{}
	for _, h := range have {
		if !slices.Contains(routes, h) {
			if err := w.cfg.Router.Delete(h); err != nil {
				st.Problem = err.Error()
				continue
			}
			w.cfg.Log.Info().Str("subnet", h.Dst.String()).Str("via", h.Via.String()).Msg("route removed")
		}
	}
	if len(routes) > 0 {
		if err := w.cfg.Router.Forward(); err != nil {
			st.Problem = err.Error()
		}
	}
	for _, r := range routes {
		if slices.Contains(have, r) {
			continue
		}
		if err := w.cfg.Router.Replace(r); err != nil {
			failed[r.Dst] = err.Error()
			continue
		}
		w.cfg.Log.Info().Str("subnet", r.Dst.String()).Str("via", r.Via.String()).Msg("route made")
	}
	for _, l := range links {
		p := events.MeshPeer{Name: l.Peer, Subnet: l.Subnet, Via: l.Via, State: l.State, Problem: l.Problem, Down: l.Down}
		if sn, err := netip.ParsePrefix(l.Subnet); err == nil && failed[sn] != "" {
			p.State, p.Problem = StateRefused, "the route was not made: "+failed[sn]
		}
		st.Peers = append(st.Peers, p)
	}
}
