package images

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

// The hash is the recipe's version: stable, and changed by a host input, the
// mirror or the recipe.
func TestHash(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "busybox")
	if err := os.WriteFile(in, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := Recipes["app"]
	r.Inputs = []string{in}
	a, err := Hash(r, "http://m1")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := Hash(r, "http://m1"); b != a || len(a) != 16 {
		t.Fatalf("hash not stable: %s %s", a, b)
	}
	if b, _ := Hash(r, "http://m2"); b == a {
		t.Error("the mirror does not change the hash")
	}
	if err := os.WriteFile(in, []byte("v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if b, _ := Hash(r, "http://m1"); b == a {
		t.Error("a changed host input does not change the hash")
	}
	s := Recipes["service"]
	s.Inputs = []string{in}
	if b, _ := Hash(s, "http://m1"); b == a {
		t.Error("two recipes hash the same")
	}
	r.Inputs = []string{filepath.Join(dir, "missing")}
	if _, err := Hash(r, "x"); err == nil || !strings.Contains(err.Error(), "needs") {
		t.Errorf("a missing input: %v", err)
	}
}

// Every recipe carries its build script, and the metadata is golden.
func TestRecipesAndMetadata(t *testing.T) {
	for name, r := range Recipes {
		if _, err := recipes.ReadFile("recipes/" + name + "/build.sh"); err != nil {
			t.Errorf("recipe %s has no build.sh: %v", name, err)
		}
		for _, tpl := range r.Templates {
			if _, err := recipes.ReadFile("recipes/" + name + "/templates/" + tpl); err != nil {
				t.Errorf("recipe %s lacks template %s", name, tpl)
			}
		}
		testutil.Golden(t, "metadata-"+name, Metadata(r, "0123456789abcdef", time.Unix(1764115200, 0)), *update)
	}
	if _, err := Lookup("nope"); err == nil || !strings.Contains(err.Error(), "app, service") {
		t.Errorf("Lookup(nope): %v", err)
	}
}
