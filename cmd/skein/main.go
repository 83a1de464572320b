// Command skein is the CLI, the bus server and the per-server agent of skein.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// globals are the flags every command takes.
type globals struct {
	nats     string
	timeout  time.Duration
	async    bool
	id       string
	output   string
	logLevel string
	// waitConnect keeps retrying the first connection (commands that wait anyway).
	waitConnect bool
	// creds is the credentials file; tlsCA the CA of the bus's TLS certificate.
	creds, tlsCA string
}

func main() {
	g := &globals{}
	root := newRoot(g)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// newRoot builds the command tree.
func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "skein",
		Short:         "skein runs the managed services of a container cluster",
		Long:          "skein runs containers, service discovery, load balancers, web servers, databases,\nfloating IPs and jobs across a handful of servers, over a NATS JetStream bus.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	def := os.Getenv("SKEIN_NATS")
	if def == "" {
		def = bus.DefaultURL
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.nats, "nats", def, "NATS URL(s), comma-separated; env SKEIN_NATS")
	pf.DurationVar(&g.timeout, "timeout", 2*time.Minute, "how long to wait for a command's result")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level of server and agent: debug, info, warn, error")
	pf.StringVar(&g.creds, "creds", os.Getenv("SKEIN_CREDS"), "credentials file (`skein creds`); env SKEIN_CREDS; default "+defaultCreds+" when it exists")
	pf.StringVar(&g.tlsCA, "tls-ca", os.Getenv("SKEIN_TLS_CA"), "CA certificate of the bus's TLS (the server's DATA/tls/ca.pem); env SKEIN_TLS_CA")

	root.AddCommand(
		serverCmd(g), natsCmd(g), upCmd(g), agentCmd(g), initCmd(g), imagesCmd(g),
		serversCmd(g), pingCmd(g), netCmd(g),
		launchCmd(g), actionCmd(g, "start"), actionCmd(g, "stop"), actionCmd(g, "restart"), actionCmd(g, "delete"),
		listCmd(g), eventsCmd(g), waitCmd(g),
		addepCmd(g), listepCmd(g), delepCmd(g),
		addserviceCmd(g), listserviceCmd(g), delserviceCmd(g), addcheckCmd(g), delcheckCmd(g), servicesCmd(g),
		pubserviceCmd(g), pubcheckCmd(g), unpubserviceCmd(g), unpubcheckCmd(g),
		addlbCmd(g), listlbsCmd(g), dellbCmd(g), addbackendsCmd(g), delbackendsCmd(g), setlbCmd(g), pubCmd(g), unpubCmd(g),
		addwsCmd(g), listwsCmd(g), delwsCmd(g), pubappCmd(g), delappCmd(g), renewappCmd(g), wscaCmd(g), addhostsCmd(g), delhostsCmd(g),
		adddbCmd(g), listdbsCmd(g), dbinfoCmd(g), deldbCmd(g), dbpasswdCmd(g), deldbinstanceCmd(g),
		backupdbCmd(g), backupsCmd(g), restoredbCmd(g),
		addvipCmd(g), listvipsCmd(g), delvipCmd(g),
		addjobCmd(g), listjobsCmd(g), upgradejobCmd(g), scalejobCmd(g), deljobCmd(g), schedulerCmd(g),
		credsCmd(g), dashboardCmd(g),
	)
	return root
}

// defaultData is the server's data directory unless --data says otherwise.
const defaultData = "/var/lib/skein"

// defaultCreds are the admin credentials `skein server` writes in its data directory.
var defaultCreds = filepath.Join(defaultData, "auth", "admin.creds")

// connOptions are the options of a connection to the bus as name: the URL,
// the credentials (--creds, SKEIN_CREDS, or the default admin's when readable)
// and the CA when the bus speaks TLS.
func (g *globals) connOptions(name string, wait bool, log zerolog.Logger) (bus.ConnOptions, error) {
	o := bus.ConnOptions{URL: g.nats, Name: name, Wait: wait, Log: log}
	path := g.creds
	if path == "" {
		if _, err := os.Stat(defaultCreds); err == nil {
			path = defaultCreds
		}
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return o, fmt.Errorf("the credentials: %w (make them with `skein creds` on the server's machine)", err)
		}
		o.Creds = b
	}
	if g.tlsCA != "" {
		b, err := os.ReadFile(g.tlsCA)
		if err != nil {
			return o, fmt.Errorf("the bus's CA: %w", err)
		}
		o.CA = b
	}
	return o, nil
}

// logger returns the logger of long-running commands, on stderr.
func (g *globals) logger() zerolog.Logger {
	lvl, err := zerolog.ParseLevel(g.logLevel)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	out := zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000", NoColor: !isTerminal(os.Stderr)}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}

// addCommandFlags adds the flags of commands that send a command to an agent.
func (g *globals) addCommandFlags(c *cobra.Command) {
	c.Flags().BoolVar(&g.async, "async", false, "return at once with the command id instead of waiting for the result")
	c.Flags().StringVar(&g.id, "id", "", "command id (a retry with the same id is done once)")
}

// addOutputFlag adds -o to list commands.
func (g *globals) addOutputFlag(c *cobra.Command) {
	c.Flags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
}

// acts finishes a command that sends a command to an agent: it takes --async,
// --id and -o.
func (g *globals) acts(c *cobra.Command) *cobra.Command {
	g.addCommandFlags(c)
	g.addOutputFlag(c)
	return c
}
