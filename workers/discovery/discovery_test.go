package discovery

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

// TestRegistrationWaitsForEndpoint: with no ready endpoint nothing is written to
// the catalog; once one is ready the container's node is registered and the
// consul domain is forwarded to it; without it the forwarding is cleared.
func TestRegistrationWaitsForEndpoint(t *testing.T) {
	r := newRig(t)
	c := r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80, Tags: []string{"v1"}}, nil)
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "metrics", Port: 9100}, nil)
	// An endpoint still being created does not count either.
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusCreating)
	r.knows(t, func(w *Worker) bool {
		return len(w.defs["web"].Services) == 2 && w.cts["web"].Status == "Running" && w.eps[rigEPName].Status == events.StatusCreating
	}, "the worker never saw web's services, its record and the creating endpoint")
	// The worker knows everything: a sync now must leave the catalog alone.
	r.dw.sync(r.ctx, true)
	if calls := r.cat.callLog(); len(calls) != 0 {
		t.Errorf("catalog written with no ready endpoint: %v", calls)
	}
	if fwd, _ := r.rt.forwarding(); len(fwd) != 0 {
		t.Errorf("consul domain forwarded to %v with no ready endpoint", fwd)
	}

	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	n := r.waitNode(t, "web", func(n consul.Node) bool { return len(n.Services) == 2 }, "web not registered once the endpoint is ready")
	if n.Address != c.IPv4 {
		t.Errorf("web registered at %q, want its address %s", n.Address, c.IPv4)
	}
	got := map[string]string{}
	for _, s := range n.Services {
		got[s.Name] = fmt.Sprintf("%d %v", s.Port, s.Tags)
	}
	if want := map[string]string{"http": "80 [v1]", "metrics": "9100 []"}; !reflect.DeepEqual(got, want) {
		t.Errorf("web's services = %v, want %v", got, want)
	}
	if n.Meta[consul.MetaServer] != rigServer || n.Meta[consul.MetaKind] != "container" || n.Meta[consul.MetaExternal] != "true" {
		t.Errorf("web's node meta = %v", n.Meta)
	}
	testutil.Eventually(t, waitLong, func() bool {
		fwd, _ := r.rt.forwarding()
		return reflect.DeepEqual(fwd, []string{rigEPDNS})
	}, "consul domain not forwarded to %s", rigEPDNS)
	_, calls := r.rt.forwarding()

	if err := r.endpoints.Delete(r.ctx, bus.Key(rigServer, rigEPName)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, waitLong, func() bool {
		fwd, n := r.rt.forwarding()
		return len(fwd) == 0 && n > calls
	}, "forwarding of the consul domain not cleared after the endpoint went")
}

// TestStoppedContainerIsDeregistered: a container that stops (behind skein's back
// or by command) leaves the catalog and comes back when started, with events.
func TestStoppedContainerIsDeregistered(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	c := r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	r.waitNode(t, "web", func(n consul.Node) bool { return n.Address == c.IPv4 && len(n.Services) == 1 }, "web not registered")
	var regs []events.Registration
	testutil.Eventually(t, waitLong, func() bool { regs = r.registrations(t, events.TypeServiceRegistered); return len(regs) == 1 }, "no service.registered event")
	if want := (events.Registration{Container: "web", Service: "http", Address: c.IPv4, Port: 80}); regs[0] != want {
		t.Errorf("service.registered = %+v, want %+v", regs[0], want)
	}

	// Stopped with the incus CLI: the follower updates the record, discovery follows.
	r.rt.SetStatusBehindBack("web", "Stopped", "instance-stopped")
	r.waitNode(t, "web", nil, "web still registered after it stopped behind skein's back")
	var deregs []events.Registration
	testutil.Eventually(t, waitLong, func() bool { deregs = r.registrations(t, events.TypeServiceDeregistered); return len(deregs) == 1 }, "no service.deregistered event")
	if want := (events.Registration{Container: "web", Service: "http", Port: 80}); deregs[0] != want {
		t.Errorf("service.deregistered = %+v, want %+v", deregs[0], want)
	}

	var started events.Container
	r.mustDo(t, events.TypeStart, events.ContainerAction{Name: "web"}, &started)
	if started.IPv4 == "" {
		t.Fatalf("started web = %+v, want an address", started)
	}
	r.waitNode(t, "web", func(n consul.Node) bool { return n.Address == started.IPv4 && len(n.Services) == 1 }, "web not registered again at "+started.IPv4+" after start")
	testutil.Eventually(t, waitLong, func() bool { regs = r.registrations(t, events.TypeServiceRegistered); return len(regs) == 2 }, "no second service.registered event")
	if regs[1].Address != started.IPv4 || regs[1].Container != "web" {
		t.Errorf("second service.registered = %+v, want web at %s", regs[1], started.IPv4)
	}

	r.mustDo(t, events.TypeStop, events.ContainerAction{Name: "web"}, nil)
	r.waitNode(t, "web", nil, "web still registered after container.stop")
	testutil.Eventually(t, waitLong, func() bool { return len(r.registrations(t, events.TypeServiceDeregistered)) == 2 }, "no second service.deregistered event")
	if n := r.cat.count("deregister web"); n != 2 {
		t.Errorf("web deregistered %d times, want 2: %v", n, r.cat.callLog())
	}
}

// TestServiceDefinitions covers service.add/delete and check.add/delete answers
// and that a refused command writes nothing.
func TestServiceDefinitions(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	r.launch(t, "web")

	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	var d events.Definitions
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 8080, Tags: []string{"b"}}, &d)
	if len(d.Services) != 1 || d.Services[0].Port != 8080 || d.Server != rigServer {
		t.Errorf("service.add of the same name again = %+v, want one http service on 8080", d)
	}
	if got := r.definitions(t, "web"); len(got.Services) != 1 || got.Services[0].Port != 8080 {
		t.Errorf("stored definitions = %+v, want one http service on 8080", got)
	}
	r.waitNode(t, "web", func(n consul.Node) bool {
		return len(n.Services) == 1 && n.Services[0].Port == 8080 && reflect.DeepEqual(n.Services[0].Tags, []string{"b"})
	}, "catalog does not hold the updated http service only")

	// Deleting a service that is not there: not found, nothing written.
	rev := r.revision(t, r.services, bus.Key(rigServer, "web"))
	_, err := r.do(t, events.TypeServiceDelete, events.ServiceDelete{Container: "web", Name: "nope"})
	wantCode(t, err, workers.CodeNotFound)
	if got := r.revision(t, r.services, bus.Key(rigServer, "web")); got != rev {
		t.Errorf("definitions rewritten by a refused delete: revision %d, was %d", got, rev)
	}
	// Deleting without a name removes them all, and the node.
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "metrics", Port: 9100}, nil)
	r.waitNode(t, "web", func(n consul.Node) bool { return len(n.Services) == 2 }, "metrics not registered")
	r.mustDo(t, events.TypeServiceDelete, events.ServiceDelete{Container: "web"}, &d)
	if len(d.Services) != 0 {
		t.Errorf("delservice without a name left %+v", d.Services)
	}
	if got := r.definitions(t, "web"); len(got.Services) != 0 {
		t.Errorf("stored services after delservice without a name = %+v", got.Services)
	}
	r.waitNode(t, "web", nil, "web still registered with no services")

	// Definitions for a container that does not exist.
	_, err = r.do(t, events.TypeServiceAdd, events.ServiceAdd{Container: "ghost", Name: "http", Port: 80})
	wantCode(t, err, workers.CodeNotFound)
	good := events.CheckDef{Name: "up", Kind: "tcp", Port: 80, Interval: "1s", Timeout: "1s"}
	_, err = r.do(t, events.TypeCheckAdd, events.CheckAdd{Container: "ghost", Check: good})
	wantCode(t, err, workers.CodeNotFound)
	if rev := r.revision(t, r.services, bus.Key(rigServer, "ghost")); rev != 0 {
		t.Errorf("definitions written for a container that does not exist (revision %d)", rev)
	}
	// A container on another server is not this server's to define.
	r.putJSON(t, r.ctrs, bus.Key("s2", "far"), events.Container{Name: "far", Server: "s2", Status: "Running", IPv4: "10.77.8.5"})
	_, err = r.do(t, events.TypeServiceAdd, events.ServiceAdd{Container: "far", Name: "http", Port: 80})
	wantCode(t, err, workers.CodeInvalid)
	if rev := r.revision(t, r.services, bus.Key(rigServer, "far")); rev != 0 {
		t.Errorf("definitions written for another server's container (revision %d)", rev)
	}

	// Check validation.
	bad := map[string]events.CheckDef{
		"tcp without port":   {Name: "c", Kind: "tcp", Interval: "1s", Timeout: "1s"},
		"http without URL":   {Name: "c", Kind: "http", Interval: "1s", Timeout: "1s"},
		"interval too short": {Name: "c", Kind: "tcp", Port: 80, Interval: "50ms", Timeout: "10ms"},
		"zero timeout":       {Name: "c", Kind: "tcp", Port: 80, Interval: "1s", Timeout: "0s"},
		"overflowing":        {Name: "c", Kind: "tcp", Port: 80, Interval: "99999999999999999999s", Timeout: "1s"},
		"timeout > interval": {Name: "c", Kind: "http", URL: "/health", Interval: "1s", Timeout: "2s"},
		"tcp skipping TLS":   {Name: "c", Kind: "tcp", Port: 80, TLSSkipVerify: true, Interval: "1s", Timeout: "1s"},
	}
	rev = r.revision(t, r.services, bus.Key(rigServer, "web"))
	for name, c := range bad {
		_, err := r.do(t, events.TypeCheckAdd, events.CheckAdd{Container: "web", Check: c})
		if err == nil {
			t.Errorf("%s: check %+v accepted", name, c)
			continue
		}
		wantCode(t, err, workers.CodeInvalid)
	}
	if got := r.revision(t, r.services, bus.Key(rigServer, "web")); got != rev {
		t.Errorf("definitions rewritten by refused checks: revision %d, was %d", got, rev)
	}
	r.mustDo(t, events.TypeCheckAdd, events.CheckAdd{Container: "web", Check: good}, &d)
	if len(d.Checks) != 1 || d.Checks[0] != good {
		t.Errorf("check.add = %+v, want the check %+v", d.Checks, good)
	}
	_, err = r.do(t, events.TypeCheckDelete, events.CheckDelete{Container: "web", Name: "nope"})
	wantCode(t, err, workers.CodeNotFound)
	r.mustDo(t, events.TypeCheckDelete, events.CheckDelete{Container: "web", Name: "up"}, &d)
	if len(d.Checks) != 0 {
		t.Errorf("check.delete left %+v", d.Checks)
	}
}

// TestCheckStatuses: a tcp check against a closed port is critical in the
// catalog, one against a listener becomes passing, and changes are told.
func TestCheckStatuses(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	c := r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	// Nothing listens in the fake container.
	r.mustDo(t, events.TypeCheckAdd, events.CheckAdd{Container: "web", Check: events.CheckDef{Name: "port", Kind: "tcp", Port: 80, Interval: "200ms", Timeout: "100ms"}}, nil)
	n := r.waitNode(t, "web", func(n consul.Node) bool { _, ok := checkByID(n, "skein:port"); return ok }, "web not registered with its check")
	if ch, _ := checkByID(n, "skein:port"); ch.Status != "critical" || ch.TCP != c.IPv4+":80" || ch.Interval != "200ms" || ch.Timeout != "100ms" {
		t.Errorf("check in the catalog = %+v, want critical tcp %s:80", ch, c.IPv4)
	}
	var cs []events.CheckStatus
	testutil.Eventually(t, waitLong, func() bool { cs = r.checkStatuses(t); return len(cs) > 0 }, "no check.status event")
	if cs[0].Container != "web" || cs[0].Check != "port" || cs[0].Status != "critical" || !strings.Contains(cs[0].Output, c.IPv4+":80") {
		t.Errorf("check.status = %+v, want web/port critical", cs[0])
	}
	if n, ok := r.cat.node("web"); !ok || len(n.Checks) != 1 || n.Checks[0].Status != "critical" {
		t.Errorf("after the check ran, catalog node web = %+v, want its check critical", n)
	}

	// An ad-hoc service with a check against a listener.
	port, stop := listen(t)
	r.mustDo(t, events.TypePublish, events.Publish{Name: "api", IP: "127.0.0.1", Port: port}, nil)
	r.mustDo(t, events.TypePublish, events.Publish{Name: "api", Check: &events.CheckDef{Name: "api-up", Kind: "tcp", Address: "127.0.0.1", Port: port, Interval: "200ms", Timeout: "100ms"}}, nil)
	r.waitNode(t, "0pub-api", func(n consul.Node) bool {
		ch, ok := checkByID(n, "skein:api-up")
		return ok && ch.Status == "passing"
	}, "the ad-hoc check on a listener never passed in the catalog")
	passing := func(cs events.CheckStatus) bool {
		return cs.Container == "0pub-api" && cs.Check == "api-up" && cs.Status == "passing"
	}
	testutil.Eventually(t, waitLong, func() bool { return anyStatus(r.checkStatuses(t), passing) }, "no passing check.status for api-up: %v", lazyStatuses{r, t})

	// The listener goes: the check turns critical in the catalog again.
	stop()
	r.waitNode(t, "0pub-api", func(n consul.Node) bool {
		ch, ok := checkByID(n, "skein:api-up")
		return ok && ch.Status == "critical"
	}, "the ad-hoc check stayed passing after its listener closed")
	testutil.Eventually(t, waitLong, func() bool {
		return anyStatus(r.checkStatuses(t), func(cs events.CheckStatus) bool {
			return cs.Container == "0pub-api" && cs.Check == "api-up" && cs.Status == "critical"
		})
	}, "no critical check.status for api-up: %v", lazyStatuses{r, t})
}

// TestNewCheckStartsCritical: a check the catalog does not have, or has with
// another definition, is critical ("not run yet") until its first run, as in
// Consul: only the very same check keeps the status the catalog has.
func TestNewCheckStartsCritical(t *testing.T) {
	r := newRig(t)
	c := r.launch(t, "web")
	site := newHeldSite(t)
	site.hold()
	fresh := events.CheckDef{Name: "fresh", Kind: "http", URL: site.URL + "/a", Interval: "1m", Timeout: "10s"}
	changed := events.CheckDef{Name: "changed", Kind: "http", URL: site.URL + "/b", Interval: "1m", Timeout: "10s"}
	// The catalog has "changed" passing, as it was before its interval changed.
	old := consul.Check{ID: "skein:changed", Name: "changed", Status: "passing", Output: "HTTP GET: 200 OK", HTTP: changed.URL, Interval: "30s", Timeout: "10s"}
	r.cat.plant(consul.Node{Name: "web", Address: c.IPv4, Meta: map[string]string{consul.MetaServer: rigServer, consul.MetaExternal: "true"}, Checks: []consul.Check{old}})
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	r.mustDo(t, events.TypeCheckAdd, events.CheckAdd{Container: "web", Check: fresh}, nil)
	r.mustDo(t, events.TypeCheckAdd, events.CheckAdd{Container: "web", Check: changed}, nil)
	r.knows(t, func(w *Worker) bool { return len(w.defs["web"].Checks) == 2 }, "the worker never saw web's checks")
	// Only now is there an endpoint: the worker reads the catalog and writes web.
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	n := r.waitNode(t, "web", func(n consul.Node) bool { return len(n.Checks) == 2 && len(n.Services) == 1 }, "web not registered with its two checks")
	for _, id := range []string{"skein:fresh", "skein:changed"} {
		if ch, _ := checkByID(n, id); ch.Status != "critical" || ch.Output != notRun {
			t.Errorf("before its first run, %s = %+v, want critical %q", id, ch, notRun)
		}
	}
	for _, w := range r.cat.statusWrites() {
		if strings.HasSuffix(w, "=passing") {
			t.Errorf("a check was written passing before it ran: %v", r.cat.statusWrites())
		}
	}
	site.release()
	r.waitNode(t, "web", func(n consul.Node) bool {
		a, _ := checkByID(n, "skein:fresh")
		b, _ := checkByID(n, "skein:changed")
		return a.Status == "passing" && b.Status == "passing"
	}, "the checks never passed once they ran")
}

func anyStatus(cs []events.CheckStatus, f func(events.CheckStatus) bool) bool {
	for _, c := range cs {
		if f(c) {
			return true
		}
	}
	return false
}

type lazyStatuses struct {
	r *rig
	t *testing.T
}

func (l lazyStatuses) String() string { return fmt.Sprint(l.r.checkStatuses(l.t)) }

// TestAdhoc: publish a service and a check, unpublish the checks, then the entry;
// an entry owned by another server is refused.
func TestAdhoc(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)

	var a events.Adhoc
	r.mustDo(t, events.TypePublish, events.Publish{Name: "db", IP: "10.1.2.3", Port: 5432}, &a)
	if a.Server != rigServer || !a.Service || a.IP != "10.1.2.3" || a.Port != 5432 {
		t.Errorf("publish = %+v", a)
	}
	n := r.waitNode(t, "0pub-db", func(n consul.Node) bool { return len(n.Services) == 1 }, "ad-hoc db not registered")
	if n.Address != "10.1.2.3" || n.Services[0].Name != "db" || n.Services[0].Port != 5432 || n.Meta[consul.MetaKind] != "adhoc" || n.Meta[consul.MetaServer] != rigServer {
		t.Errorf("ad-hoc node = %+v", n)
	}
	testutil.Eventually(t, waitLong, func() bool {
		for _, reg := range r.registrations(t, events.TypeServiceRegistered) {
			if reg.Service == "db" && reg.Address == "10.1.2.3" && reg.Port == 5432 {
				return true
			}
		}
		return false
	}, "no service.registered event for db")

	port := closedPort(t)
	chk := events.CheckDef{Name: "db-port", Kind: "tcp", Address: "127.0.0.1", Port: port, Interval: "1s", Timeout: "500ms"}
	r.mustDo(t, events.TypePublish, events.Publish{Name: "db", Check: &chk}, &a)
	if len(a.Checks) != 1 || a.Checks[0] != chk || !a.Service || a.IP != "10.1.2.3" {
		t.Errorf("publish of a check = %+v", a)
	}
	n = r.waitNode(t, "0pub-db", func(n consul.Node) bool { return len(n.Checks) == 1 }, "ad-hoc check not registered")
	if ch := n.Checks[0]; ch.ID != "skein:db-port" || ch.TCP != fmt.Sprintf("127.0.0.1:%d", port) || len(n.Services) != 1 {
		t.Errorf("ad-hoc node with its check = %+v", n)
	}

	r.mustDo(t, events.TypeUnpublish, events.Unpublish{Name: "db", ChecksOnly: true}, &a)
	if !a.Service || len(a.Checks) != 0 {
		t.Errorf("unpublish of the checks = %+v, want the service without checks", a)
	}
	n = r.waitNode(t, "0pub-db", func(n consul.Node) bool { return len(n.Checks) == 0 }, "ad-hoc check still registered after unpublishing the checks")
	if len(n.Services) != 1 || n.Services[0].Name != "db" {
		t.Errorf("unpublishing the checks lost the service: %+v", n)
	}

	r.mustDo(t, events.TypeUnpublish, events.Unpublish{Name: "db"}, nil)
	r.waitNode(t, "0pub-db", nil, "ad-hoc db still registered after unpublish")
	if rev := r.revision(t, r.adhoc, bus.Key(rigServer, "db")); rev != 0 {
		t.Errorf("ad-hoc entry still stored after unpublish (revision %d)", rev)
	}
	testutil.Eventually(t, waitLong, func() bool {
		for _, reg := range r.registrations(t, events.TypeServiceDeregistered) {
			if reg.Service == "db" {
				return true
			}
		}
		return false
	}, "no service.deregistered event for db")
	_, err := r.do(t, events.TypeUnpublish, events.Unpublish{Name: "db"})
	wantCode(t, err, workers.CodeNotFound)

	// Refused: no IP, an ad-hoc tcp check without an address.
	_, err = r.do(t, events.TypePublish, events.Publish{Name: "x", Port: 80})
	wantCode(t, err, workers.CodeInvalid)
	_, err = r.do(t, events.TypePublish, events.Publish{Name: "x", Check: &events.CheckDef{Name: "c", Kind: "tcp", Port: 80, Interval: "1s", Timeout: "1s"}})
	wantCode(t, err, workers.CodeInvalid)
	if rev := r.revision(t, r.adhoc, bus.Key(rigServer, "x")); rev != 0 {
		t.Errorf("refused publish stored an entry (revision %d)", rev)
	}

	// An entry owned by s2 is s2's to change.
	r.putJSON(t, r.adhoc, bus.Key("s2", "cache"), events.Adhoc{Name: "cache", Server: "s2", IP: "10.1.2.4", Port: 6379, Service: true, Checks: []events.CheckDef{}})
	rev := r.revision(t, r.adhoc, bus.Key("s2", "cache"))
	_, err = r.do(t, events.TypePublish, events.Publish{Name: "cache", IP: "10.1.2.5", Port: 6380})
	wantCode(t, err, workers.CodeConflict)
	_, err = r.do(t, events.TypePublish, events.Publish{Name: "cache", Check: &chk})
	wantCode(t, err, workers.CodeConflict)
	if got := r.revision(t, r.adhoc, bus.Key("s2", "cache")); got != rev {
		t.Errorf("s2's entry rewritten by s1: revision %d, was %d", got, rev)
	}
	// The bucket is watched in order: once an entry published after s2's is in
	// the catalog, the worker has seen s2's entry too.
	r.mustDo(t, events.TypePublish, events.Publish{Name: "marker", IP: "10.1.2.9", Port: 1}, nil)
	r.knows(t, func(w *Worker) bool { return w.applied["0pub-marker"] != "" }, "ad-hoc marker not registered")
	r.dw.sync(r.ctx, true)
	if _, ok := r.cat.node("0pub-cache"); ok {
		t.Errorf("s1 registered s2's ad-hoc entry: %v", r.cat)
	}
}

// TestFullResync: the periodic full sync repairs the catalog: it removes this
// server's nodes skein does not want and registers again what went missing.
func TestFullResync(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	c := r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	r.waitNode(t, "web", func(n consul.Node) bool { return len(n.Services) == 1 }, "web not registered")
	testutil.Eventually(t, waitLong, func() bool {
		fwd, _ := r.rt.forwarding()
		return len(fwd) == 1
	}, "consul domain never forwarded")
	// The sync that registered web has recorded it: the one below is alone.
	r.knows(t, func(w *Worker) bool { return w.applied["web"] != "" }, "the worker never recorded web as applied")

	// Behind skein's back: a stale node of s1, a node of s2, and web lost.
	r.cat.plant(consul.Node{Name: "ghost", Address: "10.77.9.99", Meta: map[string]string{consul.MetaServer: rigServer, consul.MetaExternal: "true"}})
	r.cat.plant(consul.Node{Name: "theirs", Address: "10.77.8.5", Meta: map[string]string{consul.MetaServer: "s2", consul.MetaExternal: "true"}})
	r.cat.forget("web")

	r.dw.sync(r.ctx, true)
	if _, ok := r.cat.node("ghost"); ok {
		t.Errorf("full sync kept a node of s1 that skein does not want: %v", r.cat)
	}
	if r.cat.count("deregister ghost") != 1 {
		t.Errorf("ghost not deregistered once: %v", r.cat.callLog())
	}
	if _, ok := r.cat.node("theirs"); !ok || r.cat.count("deregister theirs") != 0 {
		t.Errorf("full sync of s1 touched s2's node: %v", r.cat)
	}
	if n, ok := r.cat.node("web"); !ok || n.Address != c.IPv4 || len(n.Services) != 1 {
		t.Errorf("full sync did not register web again: %v", r.cat)
	}
}

// TestFullResyncRestoresLostServices: a service removed from the catalog
// behind skein's back (the node kept, as `consul services deregister` or an
// endpoint restored from an older snapshot leaves it) is registered again by
// the full sync, as a node removed is; before, only a missing node was.
func TestFullResyncRestoresLostServices(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "admin", Port: 81}, nil)
	r.waitNode(t, "web", func(n consul.Node) bool { return len(n.Services) == 2 }, "web not registered with both services")
	r.knows(t, func(w *Worker) bool {
		return strings.Contains(w.applied["web"], "http:80") && strings.Contains(w.applied["web"], "admin:81")
	}, "the worker never recorded web as applied with both services")

	n, _ := r.cat.node("web")
	n.Services = n.Services[:1]
	r.cat.plant(n)
	r.dw.sync(r.ctx, true)
	if n, _ := r.cat.node("web"); len(n.Services) != 2 {
		t.Errorf("full sync left web with %d of its 2 services: %+v", len(n.Services), n)
	}
	// A catalog that agrees is not written again.
	before := r.cat.count("register web")
	r.dw.sync(r.ctx, true)
	if after := r.cat.count("register web"); after != before {
		t.Errorf("a full sync with nothing lost registered web again (%d -> %d)", before, after)
	}
}

// TestGoneDropsDefinitions: a container gone (deleted by skein or behind its
// back) takes its definitions with it: a later container of the same name
// starts with none, and no record is left without its container.
func TestGoneDropsDefinitions(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	r.waitNode(t, "web", func(n consul.Node) bool { return len(n.Services) == 1 }, "web not registered")
	defined := func() []events.Definitions {
		var out []events.Definitions
		for _, e := range r.eventsOf(t, events.TypeServiceDefined) {
			var d events.Definitions
			if e.Payload(&d) == nil && d.Container == "web" {
				out = append(out, d)
			}
		}
		return out
	}
	testutil.Eventually(t, waitLong, func() bool {
		ds := defined()
		return len(ds) == 1 && len(ds[0].Services) == 1 && ds[0].Services[0].Name == "http"
	}, "no service.defined with http after addservice")
	r.mustDo(t, events.TypeDelete, events.ContainerAction{Name: "web"}, nil)
	r.dw.Gone("web")
	testutil.Eventually(t, waitLong, func() bool {
		ds := defined()
		return len(ds) == 2 && len(ds[1].Services) == 0
	}, "no service.defined without services once web is gone: %+v", defined())
	if _, err := r.services.Get(r.ctx, bus.Key(rigServer, "web")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the definitions of a deleted container are still recorded (%v)", err)
	}
	testutil.Eventually(t, waitLong, func() bool { _, ok := r.cat.node("web"); return !ok }, "web still in the catalog")
	r.launch(t, "web")
	if _, err := r.services.Get(r.ctx, bus.Key(rigServer, "web")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("a new container named web has the old one's definitions (%v)", err)
	}
}

// TestFullSyncDropsOrphanDefinitions: definitions whose container has no
// record any more (the container's Gone found the bus away) go at the next
// full sync.
func TestFullSyncDropsOrphanDefinitions(t *testing.T) {
	r := newRig(t)
	r.seedEndpoint(t, rigEPName, rigEPIP, events.StatusReady)
	r.launch(t, "web")
	r.mustDo(t, events.TypeServiceAdd, events.ServiceAdd{Container: "web", Name: "http", Port: 80}, nil)
	// The command answers once the definitions are written; the worker learns of them from the bucket.
	r.knows(t, func(w *Worker) bool { _, ok := w.defs["web"]; return ok }, "the worker never saw web's definitions")
	if err := r.ctrs.Delete(r.ctx, bus.Key(rigServer, "web")); err != nil {
		t.Fatal(err)
	}
	r.knows(t, func(w *Worker) bool { _, ok := w.cts["web"]; return !ok }, "the worker still sees web's record")
	r.dw.sync(r.ctx, true)
	if _, err := r.services.Get(r.ctx, bus.Key(rigServer, "web")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the definitions of a container without a record survived a full sync (%v)", err)
	}
}
