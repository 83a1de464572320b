// Package agent is the per-server worker: it wires the worker runtime to the
// domain workers of one server, follows the runtime's lifecycle events and
// publishes heartbeats.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/containers"
	"github.com/skeinhq/skein/workers/db"
	"github.com/skeinhq/skein/workers/discovery"
	"github.com/skeinhq/skein/workers/lb"
	"github.com/skeinhq/skein/workers/mesh"
	"github.com/skeinhq/skein/workers/svc"
	"github.com/skeinhq/skein/workers/vip"
	"github.com/skeinhq/skein/workers/ws"
)

// HeartbeatEvery is how often an agent reports; a server is down after three missed beats.
const HeartbeatEvery = 2 * time.Second

// DownAfter is how old a heartbeat may be before its server counts as down.
const DownAfter = 3*HeartbeatEvery + time.Second

// Config configures one agent.
type Config struct {
	// Name is the server name.
	Name string
	// Network is the Incus bridge of the server's containers.
	Network string
	// Project is the Incus project of the server's containers.
	Project string
	// Address is the server's host address, shown in `skein servers`.
	Address string
	// Version is the agent's version.
	Version string
	// Runtime is the container runtime of the server.
	Runtime container.Runtime
	// ServiceImage is the image of service containers (Consul endpoints, ...).
	ServiceImage string
	// Keys open the secrets sealed to this server; their public half is in the heartbeat.
	Keys *seal.Keys
	// State is the agent's own directory (keepalived's files live there).
	State string
	// Prereqs checks what the server needs (nil: nothing is checked).
	Prereqs container.Prereqs
	// Prepare is the command that makes what is missing, named in the fixes
	// (e.g. "skein up --prepare").
	Prepare string
	// Metrics, when set, is told of every command the agent answers.
	Metrics workers.Metrics
	// CountEvent, when set, is told the type of every event the agent publishes.
	CountEvent func(typ string)
	// Registerer, when set, takes the capabilities' own collectors.
	Registerer prometheus.Registerer
	// Mesh is how the server reaches its peers' container subnets: routed
	// (the default), wireguard or off.
	Mesh string
	// Router is the route table the mesh keeps (default: the kernel's).
	Router mesh.Router
	// MeshKey is the server's WireGuard private key (wireguard mode): kept
	// in its state directory, only its public half is in the heartbeat.
	MeshKey wgtypes.Key
	// MeshPort is the WireGuard device's UDP port (default mesh.DefaultPort).
	MeshPort int
}

// Agent is one server's worker.
type Agent struct {
	cfg  Config
	conn *bus.Conn
	log  zerolog.Logger

	mu    sync.Mutex
	last  events.Heartbeat // the runtime's last known figures
	lacks []container.Lack // what the server lacked at the last check
	beats int              // heartbeats since the last check
	cpu   cpuMeter         // the CPU the containers that are no job's instance use

	hbMu  sync.Mutex // one heartbeat written at a time
	hbRev uint64     // the revision of the heartbeat last written; 0: read it

	mesh     *mesh.Worker             // the routes to the peers' container subnets
	images   jetstream.ObjectStore    // where images lacking here are fetched from
	runCtx   context.Context          // the agent's lifetime, for fetches
	fmu      sync.Mutex               // guards fetching; never held while taking mu
	fetching map[string]chan struct{} // image alias → closed when its fetch ends
}

// New returns an agent on conn.
func New(conn *bus.Conn, cfg Config, log zerolog.Logger) *Agent {
	if cfg.Address == "" {
		cfg.Address = addressToward(conn.NC.ConnectedAddr())
	}
	if cfg.Address == "" {
		cfg.Address = hostAddress()
	}
	if cfg.Router == nil {
		cfg.Router = mesh.Netlink{}
	}
	if cfg.ServiceImage == "" {
		cfg.ServiceImage = "skein-service"
	}
	return &Agent{cfg: cfg, conn: conn, log: log.With().Str("server", cfg.Name).Logger()}
}

// Run serves the server's commands until ctx ends, then marks the server down.
func (a *Agent) Run(ctx context.Context) error {
	if !bus.ValidToken(a.cfg.Name) {
		return fmt.Errorf("bad server name %q: no dots, spaces, '*' or '>'", a.cfg.Name)
	}
	js := a.conn.JS
	if err := bus.WaitReady(ctx, js); err != nil {
		return err
	}
	cstore, err := bus.OpenStore[events.Container](ctx, js)
	if err != nil {
		return err
	}
	skv, err := bus.OpenStore[events.Heartbeat](ctx, js)
	if err != nil {
		return err
	}
	if a.images, err = js.ObjectStore(ctx, bus.ImagesBucket); err != nil {
		return err
	}
	a.runCtx = ctx
	pub := bus.NewPublisher(js, "agent/"+a.cfg.Name, a.cfg.Name)
	if a.cfg.CountEvent != nil {
		pub.CountWith(a.cfg.CountEvent)
	}
	rt := workers.NewRuntime(a.conn, a.cfg.Name, a.log)
	if a.cfg.Metrics != nil {
		rt.SetMetrics(a.cfg.Metrics)
	}

	ping := workers.Query[events.Ping, events.Pong]{Type: events.TypePing, Inline: true, Run: a.ping}
	workers.HandleQuery(rt, ping)
	workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: a.ping})
	workers.HandleQuery(rt, workers.Query[events.MeshProbe, events.MeshProbed]{Type: events.TypeMeshProbe, Run: mesh.ProbeWith(a.cfg.Runtime)})
	cw := containers.New(a.cfg.Name, a.cfg.Runtime, cstore, pub, a.log.With().Str("worker", "containers").Logger())
	cw.SetReadiness(a.ready)
	cw.SetFetcher(a.fetchImage)
	cw.SetStored(a.imageStored)
	cw.Register(rt)
	a.check(ctx)
	host := &svc.Host{Server: a.cfg.Name, Image: a.cfg.ServiceImage, Runtime: a.cfg.Runtime, Containers: cw, Locks: rt, Answered: rt.Answered, Health: &svc.Health{}, Log: a.log}
	if a.cfg.Keys != nil {
		host.Secrets = a.cfg.Keys
	}
	deps := svc.Deps{JS: js, Publisher: pub, Host: host, State: a.cfg.State, Metrics: a.cfg.Registerer}
	for _, newCap := range capabilities {
		c, err := newCap(ctx, deps)
		if err != nil {
			return err
		}
		c.Register(rt)
		cw.OnGone(c.Gone)
		go c.Run(ctx)
	}
	go cw.Run(ctx)
	bus.Keep(ctx, js, a.cfg.Name, func(bucket, key string, err error) {
		a.log.Warn().Str("bucket", bucket).Str("key", key).Err(err).Msg("a record under this server's key that its writer did not make")
	})
	a.mesh = mesh.New(mesh.Config{Server: a.cfg.Name, Mode: a.cfg.Mesh, Heartbeats: skv, Router: a.cfg.Router, Self: a.meshSelf,
		DownAfter: DownAfter, Log: a.log.With().Str("worker", "mesh").Logger(), Key: a.cfg.MeshKey, Port: a.cfg.MeshPort})
	go a.mesh.Run(ctx)
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHB()
	go a.heartbeats(hbCtx, skv)
	_ = pub.Publish(ctx, events.TypeServerUp, events.ServerEvent{Name: a.cfg.Name})
	a.log.Info().Str("network", a.cfg.Network).Str("project", a.cfg.Project).Msg("agent up")

	err = rt.Run(ctx)

	// A clean stop tells the cluster at once instead of waiting for the heartbeat to age.
	stopHB()
	done, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	hb := a.heartbeat(done)
	hb.Status = "down"
	a.putHeartbeat(done, skv, hb)
	_ = pub.Publish(done, events.TypeServerDown, events.ServerEvent{Name: a.cfg.Name})
	a.log.Info().Msg("agent down")
	return err
}

// capabilities are the domain workers every agent runs beside its containers:
// adding a capability is one line here.
var capabilities = []func(context.Context, svc.Deps) (svc.Capability, error){
	discovery.Capability,
	lb.Capability,
	ws.Capability,
	db.Capability,
	vip.Capability,
}

// meshSelf is this server's address and container subnet, as its heartbeat says them.
func (a *Agent) meshSelf() (netip.Addr, netip.Prefix, netip.Addr, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	addr, err1 := netip.ParseAddr(a.cfg.Address)
	sn, err2 := netip.ParsePrefix(a.last.Subnet)
	gw, err3 := netip.ParseAddr(a.last.Gateway)
	return addr, sn, gw, err1 == nil && err2 == nil && err3 == nil
}

// ping answers without touching any container.
func (a *Agent) ping(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
	return events.Pong{Server: a.cfg.Name, Note: p.Note, Time: time.Now().UTC()}, nil
}

func (a *Agent) heartbeats(ctx context.Context, kv *bus.Store[events.Heartbeat]) {
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		a.putHeartbeat(ctx, kv, a.heartbeat(ctx))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// putHeartbeat writes hb over the beat this agent wrote last: a beat held
// up in a dead connection's socket (the server's address moved away and
// back, the agent restarted meanwhile) lands late, finds a newer beat there
// and is refused, instead of turning the record back. A write gets one beat's
// time: one dropped by a bucket between leaders must not hold the next.
func (a *Agent) putHeartbeat(ctx context.Context, kv *bus.Store[events.Heartbeat], hb events.Heartbeat) {
	a.hbMu.Lock()
	defer a.hbMu.Unlock()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, HeartbeatEvery)
	defer cancel()
	var err error
	for try := 0; try < 2; try++ {
		if a.hbRev == 0 {
			if a.hbRev, err = kv.Revision(ctx, a.cfg.Name); err != nil {
				break
			}
		}
		var rev uint64
		// Another writer since (a restart's first beat, Keep putting it back): read its revision.
		if rev, err = kv.Update(ctx, a.cfg.Name, hb, a.hbRev); errors.Is(err, bus.ErrConflict) {
			a.hbRev = 0
			continue
		}
		if err == nil {
			a.hbRev = rev
		}
		break
	}
	if err != nil && parent.Err() == nil {
		a.log.Warn().Err(err).Msg("heartbeat not written")
	}
}

// heartbeat gathers the server's liveness and capacity. A slow container
// runtime must not delay the beat (the agent is alive): its figures are asked
// for with a short deadline and the last known ones kept otherwise.
func (a *Agent) heartbeat(ctx context.Context) events.Heartbeat {
	a.mu.Lock()
	defer a.mu.Unlock()
	hb := events.Heartbeat{Name: a.cfg.Name, Status: "up", Address: a.cfg.Address, Interfaces: hostInterfaces(), Network: a.cfg.Network, Project: a.cfg.Project, CPUs: runtime.NumCPU(), Version: a.cfg.Version, Time: time.Now().UTC()}
	if a.cfg.Keys != nil {
		hb.SealKey = a.cfg.Keys.Public()
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if sn, err := a.cfg.Runtime.Subnet(qctx); err == nil {
		a.last.Subnet, a.last.Gateway = sn.Prefix.String(), sn.Gateway.String()
	}
	if list, err := a.cfg.Runtime.List(qctx); err == nil {
		a.last.Containers, a.last.MemJobs = len(list), 0
		for _, c := range list {
			if c.Job != "" {
				a.last.MemJobs += c.MemUsage
			}
		}
		a.last.CPUOther = a.cpu.sample(list, time.Now())
	}
	hb.Subnet, hb.Gateway, hb.Containers, hb.MemJobs, hb.CPUOther = a.last.Subnet, a.last.Gateway, a.last.Containers, a.last.MemJobs, a.last.CPUOther
	// Checked every beat while something lacks (to tell its return at once), else every fifth.
	if a.beats++; a.cfg.Prereqs != nil && (len(a.lacks) > 0 || a.beats >= 5) {
		a.lacks, a.beats = a.cfg.Prereqs.Check(qctx, []string{a.cfg.ServiceImage}), 0
		a.fetchLacking()
	}
	for _, l := range a.lacks {
		hb.Degraded = append(hb.Degraded, a.fix(l))
	}
	if a.mesh != nil {
		m := a.mesh.Status()
		hb.Mesh = &m
		hb.Degraded = append(hb.Degraded, a.mesh.Problems()...)
	}
	hb.Load1 = load1()
	hb.MemTotal, hb.MemAvailable = meminfo()
	return hb
}

func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func meminfo() (total, avail uint64) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = v * 1024
		case "MemAvailable:":
			avail = v * 1024
		}
	}
	return total, avail
}

// hostInterfaces are the server's own global IPv4 addresses, by interface
// (bridges of Incus included: a floating IP is looked for in them all).
func hostInterfaces() []events.HostInterface {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []events.HostInterface
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 || len(ifi.Name) > 15 {
			continue
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() && len(out) < 64 {
				out = append(out, events.HostInterface{Name: ifi.Name, Addr: a.String()})
			}
		}
	}
	return out
}

// addressToward is this host's address on the way to the bus at remote
// (host:port): the address its peers reach it at. Empty when the bus is on
// this host (loopback) or the way is unknown.
func addressToward(remote string) string {
	host, port, err := net.SplitHostPort(remote)
	if err != nil {
		return ""
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.IsLoopback() || !ip.Is4() {
		return ""
	}
	// A UDP "connection" sends nothing: the kernel only picks the route and its source.
	c, err := net.Dial("udp4", net.JoinHostPort(host, port))
	if err != nil {
		return ""
	}
	defer c.Close()
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && !la.IP.IsLoopback() {
		return la.IP.String()
	}
	return ""
}

// hostAddress guesses the server's address: the first global unicast IPv4.
func hostAddress() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
			return ipn.IP.String()
		}
	}
	return ""
}
