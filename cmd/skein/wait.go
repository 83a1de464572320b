package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
)

func waitCmd(g *globals) *cobra.Command {
	var server string
	c := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for the result of a command sent with --async",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !bus.ValidToken(args[0]) {
				return fmt.Errorf("bad command id %q", args[0])
			}
			if server != "" && !bus.ValidToken(server) {
				return fmt.Errorf("bad server name %q", server)
			}
			// Waiting outlives server restarts, so keep trying to connect too.
			g.waitConnect = true
			cl, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cl.close()
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			res, err := cl.client.WaitResult(ctx, server, args[0], func() {
				fmt.Fprintf(os.Stderr, "waiting for the result of %s\n", args[0])
			})
			if res == nil {
				return err
			}
			if g.output == "json" {
				if perr := printJSON(res); perr != nil {
					return perr
				}
				return err
			}
			if err != nil {
				return err
			}
			fmt.Printf("%s %s: ok\n", res.CommandType, res.Command)
			return nil
		},
	}
	c.Flags().StringVarP(&server, "server", "s", "", "the server the command was sent to: only its agent's result is taken (needed on a bus with credentials)")
	g.addOutputFlag(c)
	return c
}
