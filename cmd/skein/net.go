package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/events"
)

// linkView is one server's path to one peer's container subnet.
type linkView struct {
	// Server is the server the path starts from.
	Server string `json:"server"`
	// Mode is the server's mesh mode.
	Mode string `json:"mode"`
	events.MeshPeer
}

func netCmd(g *globals) *cobra.Command {
	c := listCommand(g, listing[linkView]{
		use: "net", short: "List how each server reaches its peers' container subnets (mode, route or WireGuard endpoint, state, problem)",
		headers: []string{"SERVER", "PEER", "MODE", "SUBNET", "VIA", "STATE"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]linkView, error) {
			hbs, err := cl.heartbeats(ctx)
			up := map[string]bool{}
			for i := range hbs {
				up[hbs[i].Name] = alive(&hbs[i])
			}
			var out []linkView
			for _, hb := range hbs {
				if hb.Mesh == nil {
					continue
				}
				if len(hb.Mesh.Peers) == 0 {
					out = append(out, linkView{Server: hb.Name, Mode: hb.Mesh.Mode, MeshPeer: events.MeshPeer{State: "-", Problem: hb.Mesh.Problem}})
				}
				for _, p := range hb.Mesh.Peers {
					// The peer's liveness as of now, not as of the server's last look.
					p.Down = !up[p.Name]
					out = append(out, linkView{Server: hb.Name, Mode: hb.Mesh.Mode, MeshPeer: p})
				}
			}
			sort.SliceStable(out, func(i, j int) bool { return out[i].Server < out[j].Server })
			return out, err
		},
		row: func(v linkView) []string {
			state := v.State
			if v.State == "tunnel" {
				state += ": " + tunnelText(v.MeshPeer, time.Now())
			}
			if v.Down {
				state += " (peer down, route kept)"
			}
			if v.Problem != "" {
				state += ": " + v.Problem
			}
			return []string{v.Server, orDash(v.Name), v.Mode, orDash(v.Subnet), orDash(v.Via), state}
		},
	})
	c.AddCommand(netCheckCmd(g))
	return c
}

// probeView is one measured path, from a server's container to a peer's.
type probeView struct {
	// Server is the server measured from; From its container.
	Server string `json:"server"`
	From   string `json:"from,omitempty"`
	events.ProbeResult
}

func netCheckCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[probeView]{
		use: "check", short: "Measure reachability and round trips between the containers of every pair of servers (3 pings a path, from a running container of each)",
		headers: []string{"FROM", "TO", "REPLIES", "RTT"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]probeView, error) {
			hbs, err := cl.heartbeats(ctx)
			if err != nil {
				return nil, err
			}
			cs, err := all[events.Container](ctx, cl)
			if err != nil {
				return nil, err
			}
			// Each server is measured to one running container of each peer: the first by name.
			target := map[string]events.ProbeTarget{}
			sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
			for _, c := range cs {
				if _, ok := target[c.Server]; !ok && c.Status == "Running" && c.IPv4 != "" {
					target[c.Server] = events.ProbeTarget{Peer: c.Server, Container: c.Name, Addr: c.IPv4}
				}
			}
			var up []string
			for i := range hbs {
				if alive(&hbs[i]) {
					up = append(up, hbs[i].Name)
				}
			}
			sort.Strings(up)
			results := make([][]probeView, len(up))
			var wg sync.WaitGroup
			for i, s := range up {
				var p events.MeshProbe
				for _, peer := range up {
					if t, ok := target[peer]; ok && peer != s {
						p.Targets = append(p.Targets, t)
					}
				}
				if p.Targets == nil {
					p.Targets = []events.ProbeTarget{}
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = probe(ctx, cl, s, p)
				}()
			}
			wg.Wait()
			var out []probeView
			for _, r := range results {
				out = append(out, r...)
			}
			return out, nil
		},
		row: func(v probeView) []string {
			from, to := v.Server, v.Peer+"/"+v.Container+" "+v.Addr
			if v.From != "" {
				from += "/" + v.From
			}
			if v.Error != "" {
				return []string{from, to, fmt.Sprintf("%d/%d", v.Received, v.Sent), v.Error}
			}
			return []string{from, to, fmt.Sprintf("%d/%d", v.Received, v.Sent), fmt.Sprintf("%.3f ms", v.RTTMillis)}
		},
	})
}

// probe asks server's agent to measure its paths to the targets.
func probe(ctx context.Context, cl *cli, server string, p events.MeshProbe) []probeView {
	fail := func(err error) []probeView {
		var out []probeView
		for _, t := range p.Targets {
			out = append(out, probeView{Server: server, ProbeResult: events.ProbeResult{ProbeTarget: t, Error: err.Error()}})
		}
		return out
	}
	env, err := cl.client.NewCommand(server, events.TypeMeshProbe, "", p)
	if err != nil {
		return fail(err)
	}
	qctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := cl.client.Query(qctx, env)
	if err == nil && res.Error != nil {
		err = fmt.Errorf("%s", res.Error.Message)
	}
	var got events.MeshProbed
	if err == nil {
		err = json.Unmarshal(res.Output, &got)
	}
	if err != nil {
		return fail(err)
	}
	var out []probeView
	for _, r := range got.Results {
		out = append(out, probeView{Server: server, From: got.From, ProbeResult: r})
	}
	return out
}

// tunnelText says how a WireGuard peer is doing: its last handshake, the
// bytes through the tunnel, and where the device hears it from when that is
// not the endpoint it announces (a NAT between).
func tunnelText(p events.MeshPeer, now time.Time) string {
	s := "no handshake yet"
	if p.Handshake != nil {
		s = "handshake " + now.Sub(*p.Handshake).Round(time.Second).String() + " ago"
	}
	s += fmt.Sprintf(", rx %s, tx %s", byteCount(p.RxBytes), byteCount(p.TxBytes))
	if p.Endpoint != "" && p.Endpoint != p.Via {
		s += ", heard from " + p.Endpoint
	}
	return s
}

// byteCount prints n bytes in B, KiB, MiB or GiB.
func byteCount(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}
