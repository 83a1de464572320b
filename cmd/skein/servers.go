package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/events"
)

// serverView is a server as `skein servers` shows it.
type serverView struct {
	events.Heartbeat
	// Status is "up", "degraded" (up, lacking what its heartbeat's degraded
	// list says) or "down", from the heartbeat's age.
	Status string `json:"status"`
	// LastSeen is the heartbeat's age in seconds.
	LastSeen float64 `json:"last_seen_seconds"`
}

func serversCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[serverView]{
		use: "servers", short: "List the servers whose agents have registered, up or down",
		headers: []string{"NAME", "STATUS", "ADDRESS", "SUBNET", "CPUS", "LOAD", "MEM FREE", "CONTAINERS", "SEEN"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]serverView, error) {
			hbs, err := cl.heartbeats(ctx)
			views := make([]serverView, 0, len(hbs))
			for i := range hbs {
				st := "down"
				if alive(&hbs[i]) {
					st = "up"
					if len(hbs[i].Degraded) > 0 {
						st = "degraded"
					}
				}
				views = append(views, serverView{Heartbeat: hbs[i], Status: st, LastSeen: time.Since(hbs[i].Time).Round(time.Millisecond).Seconds()})
			}
			return views, err
		},
		row: func(v serverView) []string {
			status := v.Status
			if status == "degraded" {
				status += ": " + strings.Join(v.Degraded, "; ")
			}
			return []string{v.Name, status, orDash(v.Address), orDash(v.Subnet), fmt.Sprint(v.CPUs), fmt.Sprintf("%.2f", v.Load1),
				fmt.Sprintf("%d/%d MiB", v.MemAvailable>>20, v.MemTotal>>20), fmt.Sprint(v.Containers), fmt.Sprintf("%.0fs ago", v.LastSeen)}
		},
	})
}

func pingCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "ping SERVER",
		Short: "Make a round trip to a server's agent without touching any container",
		Long: `Make a round trip to a server's agent without touching any container.

A ping is a query: core NATS request/reply, answered at once by a running agent and
never queued for one that is down.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cl.close()
			if _, err := cl.serverUp(cmd.Context(), args[0]); err != nil {
				return err
			}
			env, err := cl.client.NewCommand(args[0], events.TypePing, "", events.Ping{})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			if _, err := cl.client.Query(ctx, env); err != nil {
				return err
			}
			fmt.Printf("pong from %s in %s\n", args[0], time.Since(start).Round(10*time.Microsecond))
			return nil
		},
	}
	return c
}
