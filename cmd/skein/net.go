package main

import (
	"context"
	"sort"

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
	return listCommand(g, listing[linkView]{
		use: "net", short: "List how each server reaches its peers' container subnets (mode, route, state, problem)",
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
			if v.Down {
				state += " (peer down, route kept)"
			}
			if v.Problem != "" {
				state += ": " + v.Problem
			}
			return []string{v.Server, orDash(v.Name), v.Mode, orDash(v.Subnet), orDash(v.Via), state}
		},
	})
}
