package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/incus"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/workers/agent"
)

type serverFlags struct {
	data   string
	listen string
}

func (f *serverFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.data, "data", "/var/lib/skein", "data directory (JetStream file storage)")
	c.Flags().StringVar(&f.listen, "listen", "127.0.0.1:4222", "client address HOST:PORT")
}

// runServer starts the embedded NATS server and creates skein's streams and buckets.
func runServer(ctx context.Context, f *serverFlags, log zerolog.Logger) (string, func(), error) {
	if err := os.MkdirAll(f.data, 0o700); err != nil {
		return "", nil, fmt.Errorf("data directory %s: %w", f.data, err)
	}
	ns, err := bus.StartServer(bus.ServerOptions{DataDir: f.data, Listen: f.listen})
	if err != nil {
		return "", nil, err
	}
	url := ns.ClientURL()
	conn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "skein-server", Log: log})
	if err != nil {
		ns.Shutdown()
		return "", nil, err
	}
	defer conn.Close()
	if err := bus.Ensure(ctx, conn.JS, 1); err != nil {
		ns.Shutdown()
		return "", nil, err
	}
	log.Info().Str("url", url).Str("data", f.data).Msg("skein server ready")
	return url, func() { ns.Shutdown(); ns.WaitForShutdown() }, nil
}

func serverCmd(g *globals) *cobra.Command {
	f := &serverFlags{}
	c := &cobra.Command{
		Use:   "server",
		Short: "Run the bus: an embedded NATS server with JetStream",
		Long: `Run the bus: an embedded NATS server with JetStream, with skein's streams and buckets.

To outgrow one node, run a NATS cluster instead and point every skein component at
it with --nats (or SKEIN_NATS); any component may then create the streams.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.logger()
			_, stop, err := runServer(cmd.Context(), f, log)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			stop()
			return nil
		},
	}
	f.add(c)
	return c
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
}

func (f *agentFlags) add(c *cobra.Command, defName string) {
	c.Flags().StringVar(&f.name, "name", defName, "server name (unique in the cluster)")
	c.Flags().StringVar(&f.network, "network", "incusbr0", "Incus bridge the server's containers attach to")
	c.Flags().StringVar(&f.project, "incus-project", "default", "Incus project of the server's containers")
	c.Flags().StringVar(&f.pool, "pool", "default", "Incus storage pool of the containers' root disks")
	c.Flags().StringVar(&f.socket, "incus-socket", "/var/lib/incus/unix.socket", "Incus API socket")
	c.Flags().StringVar(&f.address, "address", "", "the server's address to report (default: first global IPv4)")
	c.Flags().StringVar(&f.image, "service-image", "skein-service", "image of service containers (Consul endpoints, load balancers, ...)")
	c.Flags().StringVar(&f.state, "state", "", "the agent's own directory: its key pair for sealed secrets (default /var/lib/skein/agent-NAME)")
}

func (f *agentFlags) run(ctx context.Context, g *globals, url string, log zerolog.Logger) error {
	if f.name == "" {
		return fmt.Errorf("--name is required: the server's name, e.g. --name s1")
	}
	if !bus.ValidToken(f.name) {
		return fmt.Errorf("bad --name %q: no dots, spaces, '*' or '>'", f.name)
	}
	conn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "skein-agent-" + f.name, Wait: true, Log: log})
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
	ic := incus.New(f.socket).WithProject(f.project)
	rt := container.NewIncus(ic, f.network, f.pool)
	return agent.New(conn, agent.Config{Name: f.name, Network: f.network, Project: f.project, Address: f.address, Version: version, Runtime: rt, ServiceImage: f.image, Keys: keys}, log).Run(ctx)
}

func agentCmd(g *globals) *cobra.Command {
	f := &agentFlags{}
	c := &cobra.Command{
		Use:   "agent --name NAME",
		Short: "Run the agent of one server: it serves that server's commands",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context(), g, g.nats, g.logger())
		},
	}
	f.add(c, "")
	return c
}

func upCmd(g *globals) *cobra.Command {
	sf := &serverFlags{}
	af := &agentFlags{}
	c := &cobra.Command{
		Use:   "up",
		Short: "Run a server and one agent in one process: the single-machine default",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.logger()
			url, stop, err := runServer(cmd.Context(), sf, log)
			if err != nil {
				return err
			}
			defer stop()
			if af.state == "" {
				af.state = filepath.Join(sf.data, "agent")
			}
			return af.run(cmd.Context(), g, url, log)
		},
	}
	sf.add(c)
	host, _ := os.Hostname()
	af.add(c, host)
	return c
}

func initCmd(g *globals) *cobra.Command {
	var replicas int
	c := &cobra.Command{
		Use:   "init [--replicas N]",
		Short: "Create skein's streams and buckets on an external NATS (skein server does it itself)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if replicas < 1 || replicas > 5 {
				return fmt.Errorf("--replicas %d: use 1 to 5 (3 on a three-node cluster)", replicas)
			}
			conn, err := bus.Connect(bus.ConnOptions{URL: g.nats, Name: "skein-init", Log: g.logger()})
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := bus.Ensure(cmd.Context(), conn.JS, replicas); err != nil {
				return err
			}
			fmt.Printf("streams and buckets ready on %s (replicas %d)\n", g.nats, replicas)
			return nil
		},
	}
	c.Flags().IntVar(&replicas, "replicas", 1, "copies of each stream and bucket")
	return c
}
