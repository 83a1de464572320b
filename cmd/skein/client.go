package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/workers/agent"
)

// cli is a connected command-line client.
type cli struct {
	g      *globals
	conn   *bus.Conn
	client *bus.Client
}

func (g *globals) connect(ctx context.Context) (*cli, error) {
	if g.output != "" && g.output != "table" && g.output != "json" {
		return nil, fmt.Errorf("unknown output format %q: use -o table or -o json", g.output)
	}
	o, err := g.connOptions("skein-cli", g.waitConnect, zerolog.Nop())
	if err != nil {
		return nil, err
	}
	conn, err := bus.Connect(o)
	if err != nil {
		return nil, err
	}
	client := bus.NewClient(conn, "cli")
	return &cli{g: g, conn: conn, client: client}, nil
}

func (c *cli) close() { c.conn.Close() }

// do sends one command to server and waits for its result (or not, with --async).
func (c *cli) do(ctx context.Context, server, typ string, payload any) (*events.Result, error) {
	env, err := c.client.NewCommand(server, typ, c.g.id, payload)
	if err != nil {
		return nil, err
	}
	if c.g.async {
		if err := c.client.Send(ctx, env); err != nil {
			return nil, err
		}
		fmt.Println(env.ID)
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	tty := isTerminal(os.Stderr)
	res, err := c.client.Do(ctx, bus.Call{Envelope: env, Progress: func(p events.Progress) {
		if tty || os.Getenv("SKEIN_PROGRESS") != "" {
			fmt.Fprintf(os.Stderr, "  … %s\n", p.Message)
		}
	}})
	if errors.Is(err, bus.ErrNoResult) {
		return nil, fmt.Errorf("%w; wait more with `--timeout`, or check the agent with `skein servers`", err)
	}
	return res, err
}

// open opens the store of record type T, with an error a user can act on.
func open[T any](ctx context.Context, c *cli) (*bus.Store[T], error) {
	st, err := bus.OpenStore[T](ctx, c.conn.JS)
	if err != nil {
		return nil, notReady(err)
	}
	return st, nil
}

// find reads the record of type T named name, on whichever server holds it;
// missing is the error when there is none.
func find[T any](ctx context.Context, c *cli, name string, missing error) (T, error) {
	var zero T
	st, err := open[T](ctx, c)
	if err != nil {
		return zero, err
	}
	e, err := st.FindByName(ctx, name)
	if err != nil {
		return zero, err
	}
	if e == nil {
		return zero, missing
	}
	return e.Value, nil
}

// all reads every record of type T, sorted by key.
func all[T any](ctx context.Context, c *cli) ([]T, error) {
	st, err := open[T](ctx, c)
	if err != nil {
		return nil, err
	}
	out, err := st.Values(ctx)
	if out == nil {
		out = []T{}
	}
	return out, err
}

// heartbeat reads one server's heartbeat (keyed by the server's name alone).
func heartbeat(ctx context.Context, c *cli, server string) (events.Heartbeat, error) {
	st, err := open[events.Heartbeat](ctx, c)
	if err != nil {
		return events.Heartbeat{}, err
	}
	e, err := st.Get(ctx, server)
	if err != nil {
		return events.Heartbeat{}, err
	}
	return e.Value, nil
}

// heartbeats reads every server's heartbeat.
func (c *cli) heartbeats(ctx context.Context) ([]events.Heartbeat, error) {
	return all[events.Heartbeat](ctx, c)
}

// serverUp finds a server and refuses one that is unknown or, unless --async, down.
func (c *cli) serverUp(ctx context.Context, name string) (*events.Heartbeat, error) {
	start := time.Now()
	hb, err := heartbeat(ctx, c, name)
	if err == nil && !alive(&hb) && !c.g.async && hb.Status == "up" {
		// An old beat may come from a replica catching up: ask the bucket's
		// leader. And a read that waited for the bucket's stream to elect a
		// leader (a NATS node lost) finds the last beat stored before: none
		// could be stored meanwhile (found by TestNATSCluster, "down (last
		// heartbeat 8s ago)" right after the election). Then it asks again
		// for one more beat's time; otherwise (a server cut off) it refuses
		// at once.
		if st, oerr := open[events.Heartbeat](ctx, c); oerr == nil {
			deadline := time.Now()
			if time.Since(start) > electionRead {
				deadline = deadline.Add(agent.HeartbeatEvery + time.Second)
			}
			for {
				if e, lerr := st.Latest(ctx, name); lerr == nil {
					hb = e.Value
				}
				if alive(&hb) || !time.Now().Before(deadline) {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(250 * time.Millisecond):
				}
				if ctx.Err() != nil {
					break
				}
			}
		}
	}
	if err == nil {
		if !alive(&hb) && !c.g.async {
			return nil, fmt.Errorf("server %s is down (last heartbeat %s ago): start its agent, or pass --async to queue the command until it is back", name, time.Since(hb.Time).Round(time.Second))
		}
		return &hb, nil
	}
	if !errors.Is(err, bus.ErrNoRecord) {
		return nil, err
	}
	known, err := c.heartbeats(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, k := range known {
		names = append(names, k.Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("unknown server %q: no agent has registered yet (start one with `skein agent --name NAME`)", name)
	}
	return nil, fmt.Errorf("unknown server %q: known servers are %s (see `skein servers`)", name, strings.Join(names, ", "))
}

// container finds a container's record by name.
func (c *cli) container(ctx context.Context, name string) (*events.Container, error) {
	rec, err := find[events.Container](ctx, c, name, fmt.Errorf("no container named %q: `skein list` shows what exists", name))
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// electionRead is how long a read of a heartbeat takes, at most, but when
// the bucket's stream was electing a leader (a read is tried again for
// that, its first try bounded by bus.FirstReadAttempt).
var electionRead = bus.FirstReadAttempt

func alive(hb *events.Heartbeat) bool {
	return hb.Status == "up" && time.Since(hb.Time) < agent.DownAfter
}

func notReady(err error) error {
	return fmt.Errorf("skein's streams are missing (%v): is `skein server` running and reachable with --nats?", err)
}

// resolver finds the server a command goes to.
type resolver func(ctx context.Context, cl *cli) (string, error)

// send is the shape of every command that acts: resolve the server, check it is
// up, send the command, wait and print its result.
func (g *globals) send(ctx context.Context, resolve resolver, typ string, payload any, print func(*events.Result) error) error {
	return g.sendChecked(ctx, resolve, nil, typ, payload, print)
}

// precheck refuses a command before it is sent, from what the CLI can see: the
// server's heartbeat (its subnet) and the records (a name already taken).
type precheck func(ctx context.Context, cl *cli, hb *events.Heartbeat) error

// sendChecked is send with a precheck run once the server is known to be up.
func (g *globals) sendChecked(ctx context.Context, resolve resolver, check precheck, typ string, payload any, print func(*events.Result) error) error {
	if err := events.Check(typ, payload); err != nil {
		return err
	}
	cl, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.close()
	server, err := resolve(ctx, cl)
	if err != nil {
		return err
	}
	hb, err := cl.serverUp(ctx, server)
	if err != nil {
		return err
	}
	if check != nil {
		if err := check(ctx, cl, hb); err != nil {
			return err
		}
	}
	res, err := cl.do(ctx, server, typ, payload)
	if err != nil || res == nil {
		return err
	}
	return print(res)
}

// onServer resolves to the server named on the command line.
func onServer(name string) resolver {
	return func(context.Context, *cli) (string, error) { return name, nil }
}

// ofContainer resolves the server a container runs on.
func ofContainer(name string) resolver {
	return func(ctx context.Context, cl *cli) (string, error) {
		rec, err := cl.container(ctx, name)
		if err != nil {
			return "", err
		}
		return rec.Server, nil
	}
}
