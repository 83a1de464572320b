package discovery

import (
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/internal/testutil"
)

// Regression tests for bugs found by review: each failed before its fix.

// TestCheckOutputReachesCatalog: a check that fails on its first run stays
// critical, so sync never writes its output and the catalog keeps "not run yet"
// (statuses() compares statuses only), although runCheck says the first result
// replaces the placeholder.
func TestCheckOutputReachesCatalog(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	r.mustDo(t, events.TypeCheckAdd, events.CheckAdd{Container: "web", Check: events.CheckDef{Name: "port", Kind: "tcp", Port: 80, Interval: "200ms", Timeout: "100ms"}}, nil)
	r.waitNode(t, "web", func(n consul.Node) bool {
		ch, ok := checkByID(n, "skein:port")
		return ok && strings.HasPrefix(ch.Output, "TCP connect")
	}, "the catalog never got the failing check's output")
}

// TestServiceEventsFollowDefinitions: removing services of a published container
// (delservice, with or without a name) removes them from the catalog but tells
// no service.deregistered, and adding a second service tells no service.registered.
func TestServiceEventsFollowDefinitions(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	r.waitNode(t, "web", func(n consul.Node) bool { return len(n.Services) == 1 }, "web not registered")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "metrics", Port: 9100}, nil)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(r.registrations(t, events.TypeServiceRegistered)) == 2 }, "no service.registered for metrics")
	r.mustDo(t, events.TypeServiceDelete, events.ServiceDelete{Container: "web"}, nil)
	r.waitNode(t, "web", nil, "web still registered")
	testutil.Eventually(t, 10*time.Second, func() bool { return len(r.registrations(t, events.TypeServiceDeregistered)) == 2 }, "no service.deregistered for http and metrics")
}

// TestAdhocNodeDoesNotTakeContainersNode: a container may be named pub-NAME, and
// an ad-hoc entry NAME then replaces its node in the catalog.
func TestAdhocNodeDoesNotTakeContainersNode(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	c := r.launch(t, "pub-db")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "pub-db", Name: "pg", Port: 5432}, nil)
	r.waitNode(t, "pub-db", func(n consul.Node) bool { return len(n.Services) == 1 }, "pub-db not registered")
	r.mustDo(t, events.TypePublish, events.Publish{Name: "db", IP: "10.1.2.3", Port: 5432}, nil)
	r.knows(t, func(w *Worker) bool { _, ok := w.ads["db"]; return ok }, "the worker never saw the ad-hoc entry")
	r.dw.sync(r.ctx, true)
	if n, _ := r.cat.node("pub-db"); n.Address != c.IPv4 || len(n.Services) != 1 || n.Services[0].Name != "pg" {
		t.Errorf("container pub-db's node replaced by the ad-hoc entry db: %+v", n)
	}
}
