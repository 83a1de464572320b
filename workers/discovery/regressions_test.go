package discovery

import (
	"net/http"
	"net/http/httptest"
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

// TestPassingCheckSurvivesRestart: when the agent restarts, a check passing in
// the catalog stays passing. The new worker used to register every checked node
// with its checks critical ("not run yet") until they ran again, so each service
// left DNS at every agent restart.
func TestPassingCheckSurvivesRestart(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	site := newHeldSite(t)
	// "1m" comes back from Consul as "1m0s": still the same definition.
	chk := events.CheckDef{Name: "site", Kind: "http", URL: site.URL + "/health", Interval: "1m", Timeout: "10s"}
	r.mustDo(t, events.TypeCheckAdd, events.CheckAdd{Container: "web", Check: chk}, nil)
	r.waitNode(t, "web", func(n consul.Node) bool {
		ch, ok := checkByID(n, "skein:site")
		return ok && ch.Status == "passing"
	}, "the check never passed before the restart")

	// The new worker's probes hang until released: what it writes before that
	// cannot come from a run of the check.
	site.hold()
	before := len(r.cat.statusWrites())
	registers := r.cat.count("register web")
	r.restartDiscovery(t)
	testutil.Eventually(t, waitLong, func() bool { return r.cat.count("register web") > registers }, "the restarted worker never registered web: %v", r.cat)
	site.release()
	r.knows(t, func(w *Worker) bool { st := w.checks["web/site"]; return st != nil && st.ran }, "the restarted worker never ran the check")
	r.dw.sync(r.ctx, true)

	writes := r.cat.statusWrites()[before:]
	for _, w := range writes {
		if strings.HasPrefix(w, "web/skein:site=") && w != "web/skein:site=passing" {
			t.Errorf("across the restart the catalog was written %s; all writes since: %v", w, writes)
		}
	}
	if n := r.cat.count("deregister web"); n != 0 {
		t.Errorf("web deregistered %d times across the restart: %v", n, r.cat.callLog())
	}
	if n, _ := r.cat.node("web"); len(n.Checks) != 1 || n.Checks[0].Status != "passing" {
		t.Errorf("after the restart and the check's run, web = %+v, want its check passing", n)
	}
}

// TestLocalHealthFollowsChecks: the server's health board (what a floating IP
// with --check-service follows) says a service is up while an instance of it
// on this server passes all its checks, down when its check fails, and knows
// nothing of a service no container here publishes.
func TestLocalHealthFollowsChecks(t *testing.T) {
	r := newRig(t)
	health := r.dwConfig.Host.Health
	r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer site.Close()
	r.mustDo(t, events.TypeCheckAdd, events.CheckAdd{Container: "web", Check: events.CheckDef{Name: "site", Kind: "http", URL: site.URL + "/", Interval: "200ms", Timeout: "100ms"}}, nil)
	testutil.Eventually(t, 10*time.Second, func() bool { up, known := health.Service("http"); return up && known }, "the service is not up on the board")
	if up, known := health.Service("other"); up || !known {
		t.Errorf("a service nobody publishes here: up %v known %v", up, known)
	}
	site.Close()
	testutil.Eventually(t, 10*time.Second, func() bool { up, _ := health.Service("http"); return !up }, "the service stays up with its check failing")
}
