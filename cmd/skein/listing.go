package main

import (
	"context"

	"github.com/spf13/cobra"
)

// listing is what a list command shows: values read by read, printed as JSON
// as they are (an array, never null) or as a table with one row each.
type listing[V any] struct {
	// use and short document the command.
	use, short string
	// args checks the positional arguments; nil takes none.
	args cobra.PositionalArgs
	// headers are the table's column names.
	headers []string
	// read gets the values.
	read func(ctx context.Context, cl *cli, args []string) ([]V, error)
	// row is one value's table row.
	row func(V) []string
	// flags adds the command's own flags.
	flags func(c *cobra.Command)
	// local reads this machine, not the bus: read gets a nil client.
	local bool
}

// listCommand is the one shape of every list command: connect, read, print.
func listCommand[V any](g *globals, l listing[V]) *cobra.Command {
	if l.args == nil {
		l.args = cobra.NoArgs
	}
	c := &cobra.Command{
		Use:   l.use,
		Short: l.short,
		Args:  l.args,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var cl *cli
			if !l.local {
				var err error
				if cl, err = g.connect(ctx); err != nil {
					return err
				}
				defer cl.close()
			}
			vs, err := l.read(ctx, cl, args)
			if err != nil {
				return err
			}
			if g.output == "json" {
				if vs == nil {
					vs = []V{}
				}
				return printJSON(vs)
			}
			rows := make([][]string, 0, len(vs))
			for _, v := range vs {
				rows = append(rows, l.row(v))
			}
			table(l.headers, rows)
			return nil
		},
	}
	if l.flags != nil {
		l.flags(c)
	}
	g.addOutputFlag(c)
	return c
}
