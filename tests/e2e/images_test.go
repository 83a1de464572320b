//go:build e2e

package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

type imageView struct {
	Recipe      string `json:"recipe"`
	Alias       string `json:"alias"`
	Version     string `json:"version"`
	Current     bool   `json:"current"`
	Fingerprint string `json:"fingerprint"`
}

func images(t *testing.T) map[string]imageView {
	t.Helper()
	out, err := exec.Command(skeinBin, "images", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("skein images: %v %s", err, out)
	}
	var vs []imageView
	if err := json.Unmarshal(out, &vs); err != nil {
		t.Fatalf("skein images -o json: %v %s", err, out)
	}
	m := map[string]imageView{}
	for _, v := range vs {
		m[v.Recipe] = v
	}
	return m
}

// The images every test runs are the product's (the test bed builds them with
// `skein images build`); built again with the same recipe, nothing changes.
func TestImagesAreBuiltByTheProduct(t *testing.T) {
	before := images(t)
	for _, r := range []string{"app", "service"} {
		v, ok := before[r]
		if !ok || !v.Current || len(v.Version) != 16 {
			t.Fatalf("image %s: %+v, want current with a recipe version", r, v)
		}
	}
	start := time.Now()
	out, err := exec.Command(skeinBin, "images", "build", "service").CombinedOutput()
	took := time.Since(start)
	if err != nil || !strings.Contains(string(out), "current skein-service") {
		t.Fatalf("second build of service: %v\n%s", err, out)
	}
	t.Logf("skein images build service with an unchanged recipe: %s", took.Round(time.Millisecond))
	if after := images(t)["service"]; after.Fingerprint != before["service"].Fingerprint {
		t.Errorf("the image changed: %s → %s", before["service"].Fingerprint, after.Fingerprint)
	}
	out, err = exec.Command(skeinBin, "images", "build", "nope").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "use one of app, service") {
		t.Errorf("an unknown recipe: %v %s", err, out)
	}
}
