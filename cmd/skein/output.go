package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"text/tabwriter"

	"github.com/skeinhq/skein/events"

	"golang.org/x/term"
)

// printJSON prints v as indented JSON; list commands pass a slice, never nil.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, aligned.
func table(header []string, rows [][]string) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	line := func(cols []string) {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(w, "\t")
			}
			fmt.Fprint(w, c)
		}
		fmt.Fprintln(w)
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	w.Flush()
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var reflectContainerEvent = reflect.TypeFor[events.ContainerEvent]()
