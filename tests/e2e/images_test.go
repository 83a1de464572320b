//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
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

// An agent whose server lacks the service image fetches it from the bus,
// checked by its hash, and starts a load balancer from it. The server is an
// Incus project with images of its own (features.images=true), so it lacks
// what the test bed built into the default project.
func TestAgentFetchesAMissingImageFromTheBus(t *testing.T) {
	dumpOnFailure(t)
	project := fmt.Sprintf("skimg-%04x", time.Now().UnixNano()&0xffff)
	if out, err := incusCmd("project", "create", project, "-c", "features.images=true", "-c", "features.profiles=false",
		"-c", "features.networks=false", "-c", "features.storage.volumes=false"); err != nil {
		t.Fatalf("incus project create: %v %s", err, out)
	}
	js := adminJS(t)
	var agent *proc
	t.Cleanup(func() {
		_, _, _ = skein("dellb", "imglb")
		if agent != nil {
			agent.stop()
		}
		_, _ = incusCmd("delete", "--force", "imglb", "--project", project)
		out, _ := incusCmd("image", "list", "--project", project, "-f", "csv", "-c", "F")
		for _, fp := range strings.Fields(out) {
			_, _ = incusCmd("image", "delete", fp, "--project", project)
		}
		_, _ = incusCmd("project", "delete", project)
		// Other tests count three servers.
		// Through the store, which signs the deletion: readers take no other.
		if hbs, err := bus.OpenStore[events.Heartbeat](context.Background(), js); err == nil {
			_ = hbs.Delete(context.Background(), "img", 0)
		}
	})
	// The test bed built the image before this bus existed: store it now.
	out := mustSkein(t, "images", "push", "service")
	if !strings.Contains(out, "skein-service") {
		t.Fatalf("images push: %s", out)
	}
	built := images(t)["service"].Fingerprint
	if again := mustSkein(t, "images", "push", "service"); !strings.Contains(again, "already") {
		t.Errorf("a second push stored it again: %s", again)
	}

	dir := t.TempDir()
	if out, err := exec.Command(skeinBin, "creds", "agent", "img", "--data", dataDir, "-o", dir).CombinedOutput(); err != nil {
		t.Fatalf("creds agent img: %v %s", err, out)
	}
	start := time.Now()
	agent = startProc("agent-img", "agent", "--name", "img", "--nats", natsURL, "--network", "skeinbr3", "--incus-project", project,
		"--pool", "skein", "--state", filepath.Join(dir, "state"), "--creds", filepath.Join(dir, "agent-img.creds"))
	eventually(t, 120*time.Second, func() bool {
		v, ok := serverStatus(t)["img"]
		return ok && v.Status == "up"
	}, "server img never came up with its image: %v", lazyString(func() string { return fmt.Sprint(serverStatus(t)["img"]) }))
	t.Logf("agent img up with the service image %s after it started", time.Since(start).Round(time.Millisecond))
	fps, _ := incusCmd("image", "list", "--project", project, "-f", "csv", "-c", "F")
	if strings.TrimSpace(fps) != built {
		t.Fatalf("images in %s: %q, want the built %s", project, fps, built)
	}
	if b, _ := os.ReadFile(filepath.Join(logDir, "agent-img.log")); !strings.Contains(string(b), "image imported from the bus") {
		t.Errorf("the agent's log does not say it imported the image from the bus")
	}
	mustSkein(t, "addlb", "haproxy", "img", "-n", "imglb")
	base, err := incusCmd("config", "get", "imglb", "volatile.base_image", "--project", project)
	if err != nil || strings.TrimSpace(base) != built {
		t.Errorf("imglb was made from %q (%v), want %s", base, err, built)
	}
	mustSkein(t, "dellb", "imglb")
}
