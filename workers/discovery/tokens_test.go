package discovery

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/skeinhq/skein/internal/consul"
)

// TestPrefixedCatalog: an agent's nodes carry its server's prefix in Consul,
// where its token may write them, and it sees none of another server's.
func TestPrefixedCatalog(t *testing.T) {
	ctx := context.Background()
	cat := newFakeCatalog()
	s1 := prefixed{Catalog: cat, prefix: NodePrefix("s1")}
	s10 := prefixed{Catalog: cat, prefix: NodePrefix("s10")}
	meta := map[string]string{consul.MetaExternal: "true"}
	for _, c := range []struct {
		p    prefixed
		node string
	}{{s1, "web"}, {s1, "db"}, {s10, "web"}} {
		if err := c.p.Register(ctx, consul.Node{Name: c.node, Address: "10.77.1.5", Meta: meta}); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := cat.Nodes(ctx, nil)
	if want := []string{"s1.db", "s1.web", "s10.web"}; !slices.Equal(slices.Sorted(maps.Keys(all)), want) {
		t.Fatalf("catalog nodes %v, want %v", all, want)
	}
	mine, err := s1.Nodes(ctx, nil)
	if err != nil || !slices.Equal(slices.Sorted(maps.Keys(mine)), []string{"db", "web"}) {
		t.Fatalf("s1 sees %v (%v), want [db web]", mine, err)
	}
	if err := s1.UpdateChecks(ctx, "web", "10.77.1.5", []consul.Check{{ID: "skein:up", Status: "passing"}}); err != nil {
		t.Fatal(err)
	}
	nodes, err := s1.NodeChecks(ctx, nil)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("s1's node checks: %v %v", nodes, err)
	}
	for _, n := range nodes {
		if n.Name == "web" && (len(n.Checks) != 1 || n.Checks[0].Status != "passing") {
			t.Errorf("web's checks: %+v", n.Checks)
		}
	}
	if err := s1.Deregister(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	all, _ = cat.Nodes(ctx, nil)
	if want := []string{"s1.db", "s10.web"}; !slices.Equal(slices.Sorted(maps.Keys(all)), want) {
		t.Fatalf("after s1 deregistered web: %v, want %v (s10's web untouched)", all, want)
	}
}

func TestNewUUID(t *testing.T) {
	a, b := NewUUID(), NewUUID()
	if a == b {
		t.Fatal("two equal UUIDs")
	}
	for _, u := range []string{a, b} {
		if _, err := ConsulACL(u); err != nil {
			t.Errorf("%s is not a valid token: %v", u, err)
		}
		if u[14] != '4' {
			t.Errorf("%s is not version 4", u)
		}
	}
}
