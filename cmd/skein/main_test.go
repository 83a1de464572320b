package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestCommandTree builds every command and asks each for its help: a command
// that cannot be built or has a flag twice fails here, not in a user's hands.
// Commands that act take --async, --id and -o; list commands take -o.
func TestCommandTree(t *testing.T) {
	root := newRoot(&globals{})
	acting := map[string]bool{"launch": true, "start": true, "stop": true, "restart": true, "delete": true, "addep": true, "delep": true,
		"addservice": true, "delservice": true, "addcheck": true, "delcheck": true, "pubservice": true, "pubcheck": true, "unpubservice": true,
		"unpubcheck": true, "addlb": true, "dellb": true, "addbackends": true, "delbackends": true, "setlb": true, "pub": true, "unpub": true}
	listing := []string{"servers", "list", "listep", "listservice", "services", "listlbs"}
	seen := map[string]bool{}
	for _, c := range root.Commands() {
		seen[c.Name()] = true
		var out bytes.Buffer
		c.SetOut(&out)
		if err := c.Help(); err != nil {
			t.Errorf("%s --help: %v", c.Name(), err)
		}
		if acting[c.Name()] {
			for _, f := range []string{"async", "id", "output"} {
				if c.Flags().Lookup(f) == nil {
					t.Errorf("%s has no --%s", c.Name(), f)
				}
			}
		}
	}
	for _, name := range listing {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Flags().Lookup("output") == nil {
			t.Errorf("list command %s has no -o (%v)", name, err)
		}
	}
	for name := range acting {
		if !seen[name] {
			t.Errorf("no command %s", name)
		}
	}
	if _, _, err := root.Find([]string{"addlb"}); err != nil || !strings.Contains(root.UsageString(), "addlb") {
		t.Errorf("addlb missing from the usage")
	}
}
