package events

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite schemas/ from the Go types")

// TestSchemasMatchTypes fails when a Go type and its published schema drift apart.
func TestSchemasMatchTypes(t *testing.T) {
	want, err := GenerateAll()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "schemas")
	if *update {
		old, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		for name, b := range want {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("schema %s missing: run `go tool task schemas`", name)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("schemas/%s differs from its Go type: run `go tool task schemas` and review the diff", name)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		if _, ok := want[filepath.Base(f)]; !ok {
			t.Errorf("schemas/%s has no Go type: remove it or register the type", filepath.Base(f))
		}
	}
}
