package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
)

// A planned stop (SIGTERM) hands the node's Raft leaderships over first,
// then moves its clients to the other nodes over natsLameDuck.
const (
	natsLameDuck      = 5 * time.Second
	natsLameDuckGrace = time.Second
)

func natsCmd(g *globals) *cobra.Command {
	var conf, raft string
	c := &cobra.Command{
		Use:   "nats -c FILE",
		Short: "Run a node of a NATS cluster for skein (nats-server with skein's Raft timings)",
		Long: `Run a node of a NATS cluster for skein: nats-server, configured by FILE as
nats-server is (see the README's "A NATS cluster instead of the embedded server"),
with two differences made for skein's small clusters:

- a stream whose leader's node is lost elects another in 1-2 s (nats-server's
  own timings take 4-9 s), and within a few hundred milliseconds when the node's
  process died (its connections close: one of the others stands at once); every node of
  the cluster must run skein nats of the same timings: the cluster's name is
  announced with them, and a node with others (a stock nats-server) is refused
  as of another cluster;
- SIGTERM (systemctl stop) hands the node's leaderships to the others before it
  stops, and moves its clients over 5 s (lame duck); SIGHUP reloads FILE.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if conf == "" {
				return errors.New("skein nats: -c FILE is required: the node's nats-server configuration")
			}
			timings := bus.SkeinRaft
			switch raft {
			case "skein":
			case "nats-server":
				timings = bus.CurrentRaft() // what the process holds: nats-server's own
			default:
				return fmt.Errorf("skein nats: --raft %q: want skein or nats-server", raft)
			}
			opts, err := natsOptions(conf, timings)
			if err != nil {
				return err
			}
			if err := bus.SetRaft(timings); err != nil {
				return err
			}
			ns, err := server.NewServer(opts)
			if err != nil {
				return fmt.Errorf("skein nats: %w", err)
			}
			ns.ConfigureLogger()
			log := g.logger()
			// Signals are this command's from the start: a node recovering a
			// large store takes clients only once it is done, however long.
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
			defer signal.Stop(sigs)
			stopped := make(chan struct{})
			go func() { ns.WaitForShutdown(); close(stopped) }()
			go ns.Start()
			for up := false; !up; {
				select {
				case <-stopped:
					return errors.New("skein nats: the node stopped while starting (see its log above)")
				case s := <-sigs:
					if s != syscall.SIGHUP {
						ns.Shutdown()
						<-stopped
						return nil
					}
				default:
					if up = ns.ReadyForConnections(5 * time.Second); !up {
						log.Info().Msg("the node is not taking clients yet (recovering its streams)")
					}
				}
			}
			log.Info().Str("cluster", opts.Cluster.Name).Str("raft", timings.Tag()).Msg("NATS node up")
			if raft == "skein" && opts.Cluster.Port != 0 {
				watch, stopWatching := context.WithCancel(cmd.Context())
				defer stopWatching()
				go func() { <-stopped; stopWatching() }()
				go bus.CampaignOnPeerLoss(watch, ns, log)
			}
			for {
				select {
				case <-stopped:
					return nil
				case s := <-sigs:
					if s != syscall.SIGHUP {
						log.Info().Str("signal", s.String()).Msg("handing leaderships over and stopping")
						go ns.LameDuckShutdown()
						continue
					}
					fresh, err := natsOptions(conf, timings)
					if err == nil {
						err = ns.ReloadOptions(fresh)
					}
					if err != nil {
						log.Error().Err(err).Msg("reloading " + conf + ": kept the configuration running")
						continue
					}
					log.Info().Msg("reloaded " + conf)
				}
			}
		},
	}
	c.Flags().StringVarP(&conf, "config", "c", "", "the node's nats-server configuration file")
	// nats-server's own timings, to measure against (BenchmarkNATSNodeLoss).
	c.Flags().StringVar(&raft, "raft", "skein", "Raft timings: skein, or nats-server's own")
	_ = c.Flags().MarkHidden("raft")
	return c
}

// natsOptions reads a node's configuration and makes it skein's: the
// cluster's name carries the Raft timings t, a planned stop is a lame duck's.
func natsOptions(conf string, t bus.RaftTimings) (*server.Options, error) {
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		return nil, fmt.Errorf("skein nats: %w", err)
	}
	if opts.Gateway.Name != "" || opts.Gateway.Port != 0 {
		// A gateway's name must be its cluster's, which carries the timings here.
		return nil, fmt.Errorf("skein nats: %s: gateways (superclusters) are not supported: run one cluster, or stock nats-server nodes", conf)
	}
	if opts.Cluster.Port != 0 {
		if opts.Cluster.Name == "" {
			return nil, fmt.Errorf("skein nats: %s: the cluster has no name: set one, the same on every node (cluster { name: skein, ... })", conf)
		}
		opts.Cluster.Name = bus.ClusterName(opts.Cluster.Name, t)
	}
	// The process's signals are this command's (lame duck on SIGTERM).
	opts.NoSigs = true
	opts.LameDuckDuration, opts.LameDuckGracePeriod = natsLameDuck, natsLameDuckGrace
	return opts, nil
}
