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
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// Modes of the mesh.
const (
	// ModeRouted routes each peer's container subnet via the peer's address.
	ModeRouted = "routed"
	// ModeWireGuard routes each peer's container subnet through a WireGuard
	// device whose peers are the other servers: encrypted, across networks.
	ModeWireGuard = "wireguard"
	// ModeOff leaves the route table alone.
	ModeOff = "off"
)

// Config configures the mesh of one server.
type Config struct {
	// Server is this server's name.
	Server string
	// Mode is ModeRouted, ModeWireGuard or ModeOff.
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
	// Key is this server's WireGuard private key (wireguard mode).
	Key wgtypes.Key
	// Port is the WireGuard device's UDP port (default DefaultPort).
	Port int
	// Device is the WireGuard device's name (default DefaultDevice).
	Device string
	// Tunnel is the WireGuard device (default: a Device, the kernel's or wireguard-go's).
	Tunnel Tunnel
}

// Worker keeps this server's routes to its peers' container subnets.
type Worker struct {
	cfg Config

	mu     sync.Mutex
	status events.Mesh
	keys   map[string]wgtypes.Key // the tunneled peers' keys, by name

	// applied are the endpoints last set on the device, by peer key, and
	// waiting when new peers' deferred keepalives are due: only Converge's
	// goroutine touches them.
	applied map[wgtypes.Key]netip.AddrPort
	waiting map[wgtypes.Key]time.Time
}

// New returns the mesh worker.
func New(cfg Config) *Worker {
	if cfg.Mode == "" {
		cfg.Mode = ModeRouted
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Device == "" {
		cfg.Device = DefaultDevice
	}
	if cfg.Tunnel == nil {
		cfg.Tunnel = &Device{Log: cfg.Log}
	}
	return &Worker{cfg: cfg, status: events.Mesh{Mode: cfg.Mode}}
}

// Status is the mesh as this server has it, for its heartbeat; a tunneled
// peer has its endpoint, last handshake and counters as the device has them now.
func (w *Worker) Status() events.Mesh {
	w.mu.Lock()
	s := w.status
	s.Peers = slices.Clone(s.Peers)
	keys := w.keys
	w.mu.Unlock()
	if len(keys) == 0 {
		return s
	}
	have, err := w.cfg.Tunnel.Peers()
	if err != nil {
		return s
	}
	byKey := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range have {
		byKey[p.PublicKey] = p
	}
	for i := range s.Peers {
		k, ok := keys[s.Peers[i].Name]
		p, pok := byKey[k]
		if !ok || !pok {
			continue
		}
		if p.Endpoint != nil {
			s.Peers[i].Endpoint = p.Endpoint.String()
		}
		if !p.LastHandshakeTime.IsZero() {
			t := p.LastHandshakeTime.UTC()
			s.Peers[i].Handshake = &t
		}
		s.Peers[i].RxBytes, s.Peers[i].TxBytes = p.ReceiveBytes, p.TransmitBytes
	}
	return s
}

// Problems are what keeps a peer from being reached, each with its fix.
func (w *Worker) Problems() []string {
	w.mu.Lock()
	s := w.status
	w.mu.Unlock()
	var out []string
	for _, p := range s.Peers {
		if p.State == StateRefused {
			out = append(out, fmt.Sprintf("peer %s: %s", p.Name, p.Problem))
		}
	}
	if s.Problem != "" && s.Mode != ModeOff {
		out = append(out, "mesh: "+s.Problem)
	}
	return out
}

// Run follows the heartbeats and converges the routes on every change of a
// peer's address, subnet, liveness or WireGuard key and endpoint, and every
// 10 s, until ctx ends; then it removes the WireGuard device, if it made one.
func (w *Worker) Run(ctx context.Context) {
	if w.cfg.Mode == ModeOff {
		return
	}
	if w.cfg.Mode == ModeWireGuard {
		defer w.closeTunnel()
	}
	peers := map[string]events.Heartbeat{}
	var last string
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	var again <-chan time.Time // a converge that turns on deferred keepalives
	converge := func() {
		w.Converge(ctx, values(peers))
		again = nil
		if due := w.nextKeepalive(); !due.IsZero() {
			again = time.After(time.Until(due))
		}
	}
	// A peer's address, subnet and key come only from its own agent's signed heartbeat.
	w.cfg.Heartbeats.OnRefused(func(key string, err error) {
		w.cfg.Log.Warn().Str("peer", key).Err(err).Msg("a heartbeat not its server's is ignored: the peer keeps its last one")
	})
	ch := w.cfg.Heartbeats.Follow(ctx, ">", func(err error) {
		w.cfg.Log.Warn().Err(err).Msg("watching the heartbeats")
	})
	synced := false
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-ch:
			if !ok {
				return
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
				converge()
			}
		case <-tick.C:
			if synced {
				last = w.key(peers)
				converge()
			}
		case <-again:
			converge()
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
		k += fmt.Sprintf("%s %s %s %v", n, p.Address, p.Subnet, p.Status == "up" && now.Sub(p.Time) <= w.cfg.DownAfter)
		if m := p.Mesh; m != nil {
			k += fmt.Sprintf(" %s %s %s", m.Mode, m.WGKey, m.WGEndpoint)
		}
		k += "|"
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
// ones removed, missing or changed ones made, forwarding on while any exist;
// in wireguard mode the device and its peers first.
func (w *Worker) Converge(ctx context.Context, peers []events.Heartbeat) {
	st := events.Mesh{Mode: w.cfg.Mode}
	keys := map[string]wgtypes.Key{}
	defer func() {
		w.mu.Lock()
		w.status, w.keys = st, keys
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
		if w.cfg.Mode == ModeWireGuard {
			w.closeTunnel()
		}
		return
	}
	var conn []netip.Prefix
	for _, a := range addrs {
		if c := a.Masked(); c != subnet.Masked() {
			conn = append(conn, c)
		}
	}
	local := Local{Name: w.cfg.Server, Address: addr, Subnet: subnet, Connected: conn, Routes: others, Gateway: gw}
	if w.cfg.Mode == ModeWireGuard {
		w.convergeWireGuard(&st, keys, local, peers)
		return
	}
	routes, links := Plan(local, peers, time.Now(), w.cfg.DownAfter)
	failed := w.syncRoutes(&st, routes, w.forwardPolicy(local, peers))
	for _, l := range links {
		st.Peers = append(st.Peers, peerOf(l, failed))
	}
}

// convergeWireGuard brings the WireGuard device up, changes its peers to
// the plan's and routes their subnets through it. Without the device no
// route of skein's is left: peers are reached through it or not at all.
func (w *Worker) convergeWireGuard(st *events.Mesh, keys map[string]wgtypes.Key, local Local, peers []events.Heartbeat) {
	local.Device, local.Key = w.cfg.Device, w.cfg.Key.PublicKey()
	local.Endpoint = netip.AddrPortFrom(local.Address, uint16(w.cfg.Port))
	routes, tunneled, links := PlanWireGuard(local, peers, time.Now(), w.cfg.DownAfter)
	spec := TunnelSpec{Name: w.cfg.Device, PrivateKey: w.cfg.Key, Port: w.cfg.Port, Address: netip.PrefixFrom(local.Gateway, 32), Underlay: local.Address}
	if err := w.cfg.Tunnel.Up(spec); err != nil {
		st.Problem = "the WireGuard device is not up: " + err.Error()
		w.applied, w.waiting = nil, nil
		w.syncRoutes(st, nil, ForwardPolicy{})
		return
	}
	// Peers learn this server's key only once its device is up to answer.
	st.WGKey, st.WGEndpoint = local.Key.String(), local.Endpoint.String()
	failed := map[netip.Prefix]string{}
	now := time.Now()
	hold := map[wgtypes.Key]bool{}
	for k, due := range w.waiting {
		hold[k] = now.Before(due)
	}
	waiting := map[wgtypes.Key]time.Time{}
	have, err := w.cfg.Tunnel.Peers()
	if err == nil {
		cfg, deferred := peerDelta(local.Key, tunneled, have, w.applied, hold)
		for _, k := range deferred {
			waiting[k] = now.Add(deferKeepalive)
		}
		if len(cfg.Peers) > 0 {
			if err = w.cfg.Tunnel.Configure(cfg); err == nil {
				w.logPeers(cfg, tunneled)
			}
			// What the device has now decides which subnets get a route.
			var rerr error
			if have, rerr = w.cfg.Tunnel.Peers(); err == nil {
				err = rerr
			}
		}
	}
	configured := map[wgtypes.Key]bool{}
	for _, p := range have {
		configured[p.PublicKey] = p.Endpoint != nil
		if hold[p.PublicKey] {
			waiting[p.PublicKey] = w.waiting[p.PublicKey]
		}
	}
	w.waiting = waiting
	w.applied = map[wgtypes.Key]netip.AddrPort{}
	var through []Route
	for i, t := range tunneled {
		if !configured[t.Key] {
			why := "it is not a peer of the device"
			if err != nil {
				why = err.Error()
			}
			failed[t.Subnet] = "the WireGuard peer was not configured: " + why
			continue
		}
		w.applied[t.Key], keys[t.Peer] = t.Endpoint, t.Key
		through = append(through, routes[i])
	}
	fp := w.forwardPolicy(local, peers)
	fp.Devices = []string{w.cfg.Device}
	for sn, why := range w.syncRoutes(st, through, fp) {
		failed[sn] = why
	}
	for _, l := range links {
		st.Peers = append(st.Peers, peerOf(l, failed))
	}
}

// nextKeepalive is when the first deferred keepalive is due; zero when none waits.
func (w *Worker) nextKeepalive() time.Time {
	var first time.Time
	for _, due := range w.waiting {
		if first.IsZero() || due.Before(first) {
			first = due
		}
	}
	return first
}

// logPeers tells what a change of the device's peers did, by peer name.
func (w *Worker) logPeers(cfg wgtypes.Config, tunneled []Tunneled) {
	names := map[wgtypes.Key]string{}
	for _, t := range tunneled {
		names[t.Key] = t.Peer
	}
	for _, p := range cfg.Peers {
		if p.UpdateOnly && p.Endpoint == nil && !p.ReplaceAllowedIPs {
			continue // keepalives turned on: nothing an operator needs to read
		}
		ev := w.cfg.Log.Info().Str("key", p.PublicKey.String())
		switch {
		case p.Remove:
			ev.Msg("WireGuard peer removed")
		case p.UpdateOnly:
			ev.Str("peer", names[p.PublicKey]).Msg("WireGuard peer changed")
		default:
			ev.Str("peer", names[p.PublicKey]).Str("endpoint", p.Endpoint.String()).Msg("WireGuard peer added")
		}
	}
}

// closeTunnel removes the WireGuard device; its routes go with it.
func (w *Worker) closeTunnel() {
	if err := w.cfg.Tunnel.Close(); err != nil {
		w.cfg.Log.Warn().Err(err).Msg("removing the WireGuard device")
	}
	w.applied, w.waiting = nil, nil
}

// forwardPolicy is what this host forwards from its peers: their
// containers and hosts reaching its containers.
func (w *Worker) forwardPolicy(local Local, peers []events.Heartbeat) ForwardPolicy {
	p := ForwardPolicy{Subnet: local.Subnet, Underlay: local.Address}
	for _, hb := range peers {
		if hb.Name == w.cfg.Server {
			continue
		}
		if sn, err := netip.ParsePrefix(hb.Subnet); err == nil {
			p.Sources = append(p.Sources, sn.Masked())
		}
		if a, err := netip.ParseAddr(hb.Address); err == nil && a.Is4() {
			p.Sources = append(p.Sources, netip.PrefixFrom(a, 32))
		}
	}
	return p
}

// syncRoutes makes skein's routes those given: stale ones removed first,
// forwarding limited to the policy and on while any exist, missing or
// changed ones made. It returns why a route could not be made, by
// destination. Forwarding that cannot be limited is not turned on, and no
// route is made: the host would forward anything from its LAN.
func (w *Worker) syncRoutes(st *events.Mesh, routes []Route, fp ForwardPolicy) map[netip.Prefix]string {
	failed := map[netip.Prefix]string{}
	have, err := w.cfg.Router.Routes()
	if err != nil {
		st.Problem = err.Error()
		for _, r := range routes {
			failed[r.Dst] = "the route was not made: " + err.Error()
		}
		return failed
	}
	for _, h := range have {
		if !slices.Contains(routes, h) {
			if err := w.cfg.Router.Delete(h); err != nil {
				st.Problem = err.Error()
				continue
			}
			w.cfg.Log.Info().Str("route", h.String()).Msg("route removed")
		}
	}
	if len(routes) > 0 {
		if err := w.cfg.Router.LimitForwarding(fp); err != nil {
			st.Problem = "forwarding is not limited to the container subnets, so it stays as it is and no route is made: " + err.Error()
			for _, r := range routes {
				failed[r.Dst] = "the route was not made: " + st.Problem
			}
			return failed
		}
		if err := w.cfg.Router.Forward(); err != nil {
			st.Problem = err.Error()
		}
	}
	for _, r := range routes {
		if slices.Contains(have, r) {
			continue
		}
		if err := w.cfg.Router.Replace(r); err != nil {
			failed[r.Dst] = "the route was not made: " + err.Error()
			continue
		}
		w.cfg.Log.Info().Str("route", r.String()).Msg("route made")
	}
	return failed
}

// peerOf is a link of the plan as the heartbeat tells it, refused when its
// route or WireGuard peer could not be made.
func peerOf(l Link, failed map[netip.Prefix]string) events.MeshPeer {
	p := events.MeshPeer{Name: l.Peer, Subnet: l.Subnet, Via: l.Via, State: l.State, Problem: l.Problem, Down: l.Down}
	if sn, err := netip.ParsePrefix(l.Subnet); err == nil && failed[sn] != "" {
		p.State, p.Problem = StateRefused, failed[sn]
	}
	return p
}
