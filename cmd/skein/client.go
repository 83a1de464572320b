package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	conn, err := bus.Connect(bus.ConnOptions{URL: g.nats, Name: "skein-cli", Wait: g.waitConnect})
	if err != nil {
		return nil, err
	}
	return &cli{g: g, conn: conn, client: bus.NewClient(conn, "cli")}, nil
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

// heartbeats reads every server's heartbeat.
func (c *cli) heartbeats(ctx context.Context) ([]events.Heartbeat, error) {
	kv, err := c.conn.JS.KeyValue(ctx, bus.BucketServers)
	if err != nil {
		return nil, notReady(err)
	}
	var out []events.Heartbeat
	err = eachValue(ctx, kv, func(b []byte) {
		var hb events.Heartbeat
		if json.Unmarshal(b, &hb) == nil {
			out = append(out, hb)
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// serverUp finds a server and refuses one that is unknown or, unless --async, down.
func (c *cli) serverUp(ctx context.Context, name string) (*events.Heartbeat, error) {
	all, err := c.heartbeats(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for i := range all {
		if all[i].Name == name {
			hb := &all[i]
			if !alive(hb) && !c.g.async {
				return nil, fmt.Errorf("server %s is down (last heartbeat %s ago): start its agent, or pass --async to queue the command until it is back", name, time.Since(hb.Time).Round(time.Second))
			}
			return hb, nil
		}
		names = append(names, all[i].Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("unknown server %q: no agent has registered yet (start one with `skein agent --name NAME`)", name)
	}
	return nil, fmt.Errorf("unknown server %q: known servers are %s (see `skein servers`)", name, strings.Join(names, ", "))
}

// container finds a container's record by name.
func (c *cli) container(ctx context.Context, name string) (*events.Container, error) {
	kv, err := c.conn.JS.KeyValue(ctx, bus.BucketContainers)
	if err != nil {
		return nil, notReady(err)
	}
	e, err := kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("no container named %q: `skein list` shows what exists", name)
	}
	if err != nil {
		return nil, err
	}
	var rec events.Container
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// containers reads every container record.
func (c *cli) containers(ctx context.Context) ([]events.Container, error) {
	kv, err := c.conn.JS.KeyValue(ctx, bus.BucketContainers)
	if err != nil {
		return nil, notReady(err)
	}
	var out []events.Container
	err = eachValue(ctx, kv, func(b []byte) {
		var rec events.Container
		if json.Unmarshal(b, &rec) == nil {
			out = append(out, rec)
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

func eachValue(ctx context.Context, kv jetstream.KeyValue, f func([]byte)) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	for e := range w.Updates() {
		if e == nil {
			return nil
		}
		f(e.Value())
	}
	return ctx.Err()
}

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
	cl, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.close()
	server, err := resolve(ctx, cl)
	if err != nil {
		return err
	}
	if _, err := cl.serverUp(ctx, server); err != nil {
		return err
	}
	res, err := cl.do(ctx, server, typ, payload)
	if err != nil || res == nil {
		return err
	}
	return print(res)
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
