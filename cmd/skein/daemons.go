package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/dashboard"
	"github.com/skeinhq/skein/internal/incus"
	"github.com/skeinhq/skein/internal/metrics"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/workers/agent"
	"github.com/skeinhq/skein/workers/mesh"
)

type serverFlags struct {
	data    string
	listen  string
	noTLS   bool
	tlsCert string
	tlsKey  string
	// noScheduler leaves the job scheduler to `skein scheduler` processes.
	noScheduler bool
	grace       time.Duration
	// http is the dashboard's address ("": none).
	http string
}

func (f *serverFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.data, "data", defaultData, "data directory: JetStream's storage, the bus's keys (auth/) and TLS (tls/)")
	c.Flags().StringVar(&f.listen, "listen", "127.0.0.1:4222", "client address HOST:PORT; beyond loopback the bus speaks TLS")
	c.Flags().BoolVar(&f.noTLS, "no-tls", false, "plain TCP (refused beyond loopback)")
	c.Flags().StringVar(&f.tlsCert, "tls-cert", "", "the server's TLS certificate (default: one made under DATA/tls, with its CA)")
	c.Flags().StringVar(&f.tlsKey, "tls-key", "", "the key of --tls-cert")
	c.Flags().BoolVar(&f.noScheduler, "no-scheduler", false, "run no job scheduler here (run `skein scheduler` elsewhere)")
	c.Flags().DurationVar(&f.grace, "scheduler-grace", 10*time.Second, "how long a server may be down before the scheduler places its instances elsewhere")
	c.Flags().StringVar(&f.http, "http", defaultDashboard, "serve the live dashboard on ADDR: open on loopback; beyond, over HTTPS with a login (skein dashboard URL); \"\" for none")
}

// bus is what runServer started: the URL, the authority, the CA clients need
// (nil without TLS) and how to stop it.
type runningBus struct {
	url       string
	authority *bus.Authority
	ca        []byte
	stop      func()
}

// runServer starts the embedded NATS server, with the bus's authority (made
// on first start) and TLS beyond loopback, and creates skein's streams and
// buckets; the admin's credentials are written to DATA/auth/admin.creds.
func runServer(ctx context.Context, f *serverFlags, reg *prometheus.Registry, log zerolog.Logger) (*runningBus, error) {
	if err := os.MkdirAll(f.data, 0o700); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", f.data, err)
	}
	host, _, err := net.SplitHostPort(f.listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: want HOST:PORT, e.g. 127.0.0.1:4222", f.listen)
	}
	rb := &runningBus{}
	var tlsConf *tls.Config
	switch {
	case f.noTLS && !bus.Loopback(host):
		return nil, fmt.Errorf("--no-tls on %s: beyond loopback the bus must speak TLS (drop --no-tls, or listen on 127.0.0.1)", f.listen)
	case !f.noTLS && (!bus.Loopback(host) || f.tlsCert != ""):
		if tlsConf, rb.ca, err = bus.ServerTLS(filepath.Join(f.data, "tls"), host, f.tlsCert, f.tlsKey, ""); err != nil {
			return nil, err
		}
	}
	if rb.authority, err = bus.LoadAuthority(filepath.Join(f.data, "auth")); err != nil {
		return nil, err
	}
	ns, err := bus.StartServer(bus.ServerOptions{DataDir: f.data, Listen: f.listen, Authority: rb.authority, TLS: tlsConf})
	if err != nil {
		return nil, err
	}
	rb.url = ns.ClientURL()
	if tlsConf != nil {
		rb.url = strings.Replace(rb.url, "nats://", "tls://", 1)
	}
	rb.stop = func() { ns.Shutdown(); ns.WaitForShutdown() }
	admin, err := rb.authority.Creds(bus.Role{Kind: "admin"})
	if err != nil {
		rb.stop()
		return nil, err
	}
	adminFile := filepath.Join(f.data, "auth", "admin.creds")
	// Made again when it holds no key (made before commands were signed).
	if old, err := os.ReadFile(adminFile); errors.Is(err, os.ErrNotExist) || (err == nil && !hasKeys(old)) {
		if err := os.WriteFile(adminFile, admin, 0o600); err != nil {
			rb.stop()
			return nil, err
		}
	}
	// Backups are sealed to the admin's backup key, kept beside its credentials.
	if _, err := seal.LoadOrCreate(filepath.Join(f.data, "auth", backupKeyName)); err != nil {
		rb.stop()
		return nil, err
	}
	conn, err := bus.Connect(bus.ConnOptions{URL: rb.url, Name: "skein-server", Log: log, Creds: admin, CA: rb.ca})
	if err != nil {
		rb.stop()
		return nil, err
	}
	defer conn.Close()
	if err := bus.Ensure(ctx, conn.JS, 1); err != nil {
		rb.stop()
		return nil, err
	}
	// The authority's follower makes each role's consumers and stores, which no role but the admin may make.
	fconn, err := bus.Connect(bus.ConnOptions{URL: rb.url, Name: "skein-server-authority", Log: log, Creds: admin, CA: rb.ca})
	if err != nil {
		rb.stop()
		return nil, err
	}
	go func() {
		defer fconn.Close()
		bus.FollowAuthority(ctx, rb.authority, ns, fconn.JS, log)
	}()
	// Records forged while their agent is down are put back by the server.
	bus.KeepAll(ctx, fconn.JS, func(bucket, key string, err error) {
		log.Warn().Str("bucket", bucket).Str("key", key).Err(err).Msg("a record its writer did not make")
	})
	if f.http != "" || reg != nil {
		// The dashboard and the cluster's gauges read the records on one connection of their own.
		sconn, err := bus.Connect(bus.ConnOptions{URL: rb.url, Name: "skein-server-views", Log: log, Creds: admin, CA: rb.ca})
		if err != nil {
			rb.stop()
			return nil, err
		}
		go func() { <-ctx.Done(); sconn.Close() }()
		if f.http != "" {
			if err := serveDashboard(ctx, f, rb.authority, sconn, log); err != nil {
				rb.stop()
				return nil, err
			}
		}
		if reg != nil {
			records, err := metrics.OpenRecords(ctx, sconn.JS)
			if err != nil {
				rb.stop()
				return nil, err
			}
			reg.MustRegister(metrics.NewCluster(records))
		}
	}
	if !f.noScheduler {
		sched, err := rb.authority.Creds(bus.Role{Kind: "scheduler"})
		if err != nil {
			rb.stop()
			return nil, err
		}
		go func() {
			if err := runScheduler(ctx, bus.ConnOptions{URL: rb.url, Creds: sched, CA: rb.ca}, "", f.grace, reg, log); err != nil && ctx.Err() == nil {
				log.Error().Err(err).Msg("the scheduler stopped")
			}
		}()
	}
	ev := log.Info().Str("url", rb.url).Str("data", f.data).Str("admin_creds", adminFile)
	if tlsConf != nil {
		ev = ev.Str("tls_ca", bus.CAFile(filepath.Join(f.data, "tls")))
	}
	ev.Msg("skein server ready")
	return rb, nil
}

func serverCmd(g *globals) *cobra.Command {
	f := &serverFlags{}
	var metricsAddr string
	c := &cobra.Command{
		Use:   "server",
		Short: "Run the bus: an embedded NATS server with JetStream",
		Long: `Run the bus: an embedded NATS server with JetStream, with skein's streams and buckets.

Every client must present credentials the server's authority issued (skein creds);
beyond loopback the bus speaks TLS (a CA and certificate are made under DATA/tls).
To outgrow one node, run a NATS cluster instead and point every skein component at
it with --nats (or SKEIN_NATS); any component may then create the streams.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.logger()
			reg := newRegistry(metricsAddr)
			rb, err := runServer(cmd.Context(), f, reg, log)
			if err != nil {
				return err
			}
			defer rb.stop()
			if err := serveMetrics(cmd.Context(), metricsAddr, reg, log); err != nil {
				return err
			}
			<-cmd.Context().Done()
			return nil
		},
	}
	f.add(c)
	c.Flags().StringVar(&metricsAddr, "metrics", "", metricsUsage)
	return c
}

// defaultDashboard is where skein server and skein up serve the dashboard.
const defaultDashboard = "127.0.0.1:8474"

// serveDashboard serves the dashboard on --http. Beyond loopback it asks for
// a login checked by the bus's authority, over TLS with a certificate of
// skein's CA (or --tls-cert). The default address already taken (another
// skein on this machine) is not fatal; an address asked for is.
func serveDashboard(ctx context.Context, f *serverFlags, a *bus.Authority, conn *bus.Conn, log zerolog.Logger) error {
	// Serve decides whether the address is beyond loopback, and then needs these.
	o := dashboard.Options{Addr: f.http, JS: conn.JS, Log: log, Auth: a, UsedLogins: filepath.Join(f.data, "auth", "dashboard-logins.json"), TLS: func(host string) (*tls.Config, error) {
		c, _, err := bus.ServerTLS(filepath.Join(f.data, "tls"), host, f.tlsCert, f.tlsKey, "")
		return c, err
	}}
	if _, err := dashboard.Serve(ctx, o); err != nil {
		if f.http == defaultDashboard && errors.Is(err, syscall.EADDRINUSE) {
			log.Warn().Err(err).Msg("no dashboard: its default address is taken (--http ADDR chooses another)")
			return nil
		}
		return fmt.Errorf("--http %s: %w", f.http, err)
	}
	return nil
}

// metricsUsage is the help of every daemon's --metrics.
const metricsUsage = "serve Prometheus metrics on http://ADDR/metrics, on loopback only (e.g. 127.0.0.1:9464; default: none)"

// newRegistry is a metrics registry when addr is set, else nil.
func newRegistry(addr string) *prometheus.Registry {
	if addr == "" {
		return nil
	}
	return metrics.NewRegistry()
}

// serveMetrics serves reg on http://addr/metrics until ctx ends ("": nothing).
// Only on loopback: the endpoint is plain HTTP without a login, and what it
// tells (servers, names, load) is the observer's to read, not the network's.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log zerolog.Logger) error {
	if addr == "" {
		return nil
	}
	if host, _, err := net.SplitHostPort(addr); err != nil || !bus.Loopback(host) {
		return fmt.Errorf("--metrics %s: metrics are served on loopback only (plain HTTP, no login): give 127.0.0.1:PORT and scrape it from a Prometheus on this machine, or through an SSH tunnel", addr)
	}
	if err := metrics.Serve(ctx, addr, reg, log); err != nil {
		return fmt.Errorf("--metrics %s: %w", addr, err)
	}
	return nil
}

type agentFlags struct {
	name    string
	network string
	project string
	pool    string
	socket  string
	address string
	image   string
	state   string
	// prepare makes what the server lacks; cmd names the command in the fixes.
	prepare  bool
	cmd      string
	subnet   string
	supernet string
	mesh     string
	meshPort int
}

func (f *agentFlags) add(c *cobra.Command, defName string) {
	c.Flags().StringVar(&f.name, "name", defName, "server name (unique in the cluster)")
	c.Flags().StringVar(&f.network, "network", "incusbr0", "Incus bridge the server's containers attach to")
	c.Flags().StringVar(&f.project, "incus-project", "default", "Incus project of the server's containers")
	c.Flags().StringVar(&f.pool, "pool", "default", "Incus storage pool of the containers' root disks")
	c.Flags().StringVar(&f.socket, "incus-socket", "/var/lib/incus/unix.socket", "Incus API socket")
	c.Flags().StringVar(&f.address, "address", "", "the server's address its peers reach it at (default: its address on the way to the bus, else its first global IPv4)")
	c.Flags().StringVar(&f.mesh, "mesh", "routed", "how the container subnets of the servers are connected: routed (a route to each peer's subnet via its address, peers on a shared network), wireguard (through an encrypted WireGuard device, peers on any network) or off")
	c.Flags().IntVar(&f.meshPort, "mesh-port", mesh.DefaultPort, "the UDP port of the WireGuard device (--mesh wireguard); peers reach it at --address")
	c.Flags().StringVar(&f.image, "service-image", "skein-service", "image of service containers (Consul endpoints, load balancers, ...)")
	c.Flags().StringVar(&f.state, "state", "", "the agent's own directory: its key pairs for sealed secrets and WireGuard (default /var/lib/skein/agent-NAME)")
	c.Flags().BoolVar(&f.prepare, "prepare", f.prepare, "create what the server lacks: the storage pool, a NAT-free bridge on a free /24, the project (nothing that exists is changed)")
	c.Flags().StringVar(&f.subnet, "subnet", "", "the /24 a new bridge gets with --prepare (default: a free one in --supernet)")
	c.Flags().StringVar(&f.supernet, "supernet", "10.77.0.0/16", "where --prepare looks for a free /24")
}

// prepareSpec reads --subnet and --supernet.
func (f *agentFlags) prepareSpec() (container.PrepareSpec, error) {
	var spec container.PrepareSpec
	var err error
	if spec.Supernet, err = netip.ParsePrefix(f.supernet); err != nil || !spec.Supernet.Addr().Is4() || spec.Supernet.Bits() > 24 {
		return spec, fmt.Errorf("--supernet %q: give an IPv4 prefix of /24 or wider, e.g. 10.77.0.0/16", f.supernet)
	}
	if f.subnet != "" {
		if spec.Subnet, err = netip.ParsePrefix(f.subnet); err != nil || !spec.Subnet.Addr().Is4() || spec.Subnet.Bits() != 24 || spec.Subnet.Masked() != spec.Subnet {
			return spec, fmt.Errorf("--subnet %q: give an IPv4 /24 such as 10.77.9.0/24", f.subnet)
		}
	}
	return spec, nil
}

func (f *agentFlags) run(ctx context.Context, g *globals, o bus.ConnOptions, reg *prometheus.Registry, log zerolog.Logger) error {
	if f.name == "" {
		return fmt.Errorf("--name is required: the server's name, e.g. --name s1")
	}
	if !bus.ValidToken(f.name) {
		return fmt.Errorf("bad --name %q: no dots, spaces, '*' or '>'", f.name)
	}
	spec, err := f.prepareSpec()
	if err != nil {
		return err
	}
	if f.mesh != mesh.ModeRouted && f.mesh != mesh.ModeWireGuard && f.mesh != mesh.ModeOff {
		return fmt.Errorf("--mesh %q: want routed, wireguard or off", f.mesh)
	}
	if f.meshPort < 1 || f.meshPort > 65535 {
		return fmt.Errorf("--mesh-port %d: give a UDP port from 1 to 65535 (default %d)", f.meshPort, mesh.DefaultPort)
	}
	if f.address != "" {
		if a, err := netip.ParseAddr(f.address); err != nil || !a.Is4() {
			return fmt.Errorf("--address %q: give the server's IPv4 address, e.g. 10.0.0.12", f.address)
		}
	}
	o.Name, o.Wait, o.Log = "skein-agent-"+f.name, true, log
	conn, err := bus.Connect(o)
	if err != nil {
		return err
	}
	defer conn.Close()
	state := f.state
	if state == "" {
		state = filepath.Join("/var/lib/skein", "agent-"+f.name)
	}
	keys, err := seal.LoadOrCreate(filepath.Join(state, "seal.key"))
	if err != nil {
		return fmt.Errorf("the agent's key pair: %w (choose another directory with --state)", err)
	}
	var wgKey wgtypes.Key
	if f.mesh == mesh.ModeWireGuard {
		if wgKey, err = mesh.LoadOrCreateKey(filepath.Join(state, mesh.KeyFile)); err != nil {
			return fmt.Errorf("the agent's WireGuard key: %w (choose another directory with --state)", err)
		}
	}
	ic := incus.New(f.socket).WithProject(f.project)
	rt := container.NewIncus(ic, f.network, f.pool)
	if f.prepare {
		made, err := rt.Prepare(ctx, spec)
		for _, m := range made {
			log.Info().Str("created", m).Msg("prepared")
		}
		switch {
		case err != nil:
			// The agent runs anyway: its heartbeat says what lacks, and how to fix it.
			log.Error().Err(err).Msg("preparing the server")
		case len(made) == 0:
			log.Info().Msg("prepared: nothing to create, the server has its pool, network and project")
		}
	}
	cfg := agent.Config{Name: f.name, Network: f.network, Project: f.project, Address: f.address, Version: version, Runtime: rt, ServiceImage: f.image, Keys: keys, State: state,
		Prereqs: rt, Prepare: f.cmd, Mesh: f.mesh, MeshKey: wgKey, MeshPort: f.meshPort}
	if reg != nil {
		cfg.Metrics = metrics.NewCommands(reg, f.name)
		cfg.CountEvent = metrics.NewEvents(reg, "agent/"+f.name).Published
		cfg.Registerer = reg
	}
	return agent.New(conn, cfg, log).Run(ctx)
}

func agentCmd(g *globals) *cobra.Command {
	f := &agentFlags{cmd: "skein agent --prepare"}
	var metricsAddr string
	c := &cobra.Command{
		Use:   "agent --name NAME",
		Short: "Run the agent of one server: it serves that server's commands",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.logger()
			o, err := g.connOptions("", true, log)
			if err != nil {
				return err
			}
			reg := newRegistry(metricsAddr)
			if err := serveMetrics(cmd.Context(), metricsAddr, reg, log); err != nil {
				return err
			}
			return f.run(cmd.Context(), g, o, reg, log)
		},
	}
	f.add(c, "")
	c.Flags().StringVar(&metricsAddr, "metrics", "", metricsUsage)
	return c
}

func upCmd(g *globals) *cobra.Command {
	sf := &serverFlags{}
	var metricsAddr string
	af := &agentFlags{prepare: true, cmd: "skein up --prepare"}
	c := &cobra.Command{
		Use:   "up",
		Short: "Run a server and one agent in one process: the single-machine default",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.logger()
			reg := newRegistry(metricsAddr)
			rb, err := runServer(cmd.Context(), sf, reg, log)
			if err != nil {
				return err
			}
			defer rb.stop()
			if err := serveMetrics(cmd.Context(), metricsAddr, reg, log); err != nil {
				return err
			}
			if af.state == "" {
				af.state = filepath.Join(sf.data, "agent")
			}
			// The agent in the same process gets its own credentials, held to its server.
			if !bus.ValidToken(af.name) {
				return fmt.Errorf("bad --name %q: no dots, spaces, '*' or '>'", af.name)
			}
			creds, err := rb.authority.Creds(bus.Role{Kind: "agent", Server: af.name})
			if err != nil {
				return err
			}
			return af.run(cmd.Context(), g, bus.ConnOptions{URL: rb.url, Creds: creds, CA: rb.ca}, reg, log)
		},
	}
	sf.add(c)
	c.Flags().StringVar(&metricsAddr, "metrics", "", metricsUsage)
	host, _ := os.Hostname()
	af.add(c, host)
	return c
}

func initCmd(g *globals) *cobra.Command {
	var replicas int
	var data string
	c := &cobra.Command{
		Use:   "init [--replicas N] [--data DIR]",
		Short: "Create skein's streams and buckets on an external NATS (skein server does it itself)",
		Long: `Create skein's streams and buckets on an external NATS (skein server does it itself).

With the bus's authority in DATA/auth (where skein creds runs), it also makes what
each role issued credentials consumes but may not make: every agent's command
consumer and backups store, and the scheduler's consumer. Run it again after
issuing credentials to a new agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if replicas < 1 || replicas > 5 {
				return fmt.Errorf("--replicas %d: use 1 to 5 (3 on a three-node cluster)", replicas)
			}
			o, err := g.connOptions("skein-init", false, g.logger())
			if err != nil {
				return err
			}
			conn, err := bus.Connect(o)
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := bus.Ensure(cmd.Context(), conn.JS, replicas); err != nil {
				return err
			}
			fmt.Printf("streams and buckets ready on %s (replicas %d)\n", g.nats, replicas)
			// Only where the authority lives: LoadAuthority would make a new one elsewhere.
			if _, err := os.Stat(filepath.Join(data, "auth", "users.json")); err != nil {
				return nil
			}
			a, err := bus.LoadAuthority(filepath.Join(data, "auth"))
			if err != nil {
				return err
			}
			roles := a.Issued()
			if err := bus.ProvisionRoles(cmd.Context(), conn.JS, roles); err != nil {
				return err
			}
			fmt.Printf("command consumers and backups stores ready for %d roles\n", len(roles))
			return nil
		},
	}
	c.Flags().IntVar(&replicas, "replicas", 1, "copies of each stream and bucket")
	c.Flags().StringVar(&data, "data", defaultData, "the data directory of the bus's authority (auth/), as for skein creds")
	return c
}

// hasKeys says whether creds hold a key block (bus.ParseKeys).
func hasKeys(creds []byte) bool {
	k, err := bus.ParseKeys(creds)
	return err == nil && k.Signs()
}
