//go:build e2e

// Package soak is the chaos soak: a seeded workload across the capabilities
// with a model of what should be, seeded faults injected while it runs, and a
// checker that compares the end state and the history with the model. A bed
// (the single host's Incus projects in tests/e2e, the machines in
// tests/machines) says how to reach its servers and which faults it has.
// SKEIN_SOAK_COMMANDS (default 200) and SKEIN_SOAK_SEED (default: the time)
// set its size and seed.
package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/workers/discovery"
)

// Bed is a cluster the soak runs on, and how the checker reads what runs.
type Bed struct {
	// Name is said in the report; Tag names the history file.
	Name, Tag string
	// URLs and CA: the bus as the CLI and the observer reach it.
	URLs []string
	CA   string
	// AdminCreds, SkeinBin: the admin's credentials and the CLI.
	AdminCreds, SkeinBin string
	// LogDir receives the history, a line per command.
	LogDir string
	// Servers are the agents' names; the pools are spread over them.
	Servers []string
	// EP and EPName: the Consul endpoint's fixed address and name, made on
	// the second server.
	EP, EPName string
	// Incus runs the incus CLI against a server's own containers.
	Incus func(server string, args ...string) (string, error)
	// InContainer runs a shell script in a container of a server.
	InContainer func(server, container, script string) (string, error)
	// ConsulGet reads a path of the endpoint's Consul HTTP API.
	ConsulGet func(path string) ([]byte, error)
	// LBBackends are the backends haproxy of a load balancer runs.
	LBBackends func(server, lb string) ([]string, error)
	// Faults are the bed's own, injected besides the soak's (the Consul
	// endpoint stopped, a container changed behind skein's back).
	Faults []Fault
}

// Fault is one kind of fault a bed can inject.
type Fault struct {
	Kind string
	// BusLoss: the time from the fault to the next command done is reported.
	BusLoss bool
	// Do injects the fault, undoes it, and says what it did ("" if nothing);
	// an error fails the soak (the fault could not be undone).
	Do func(r *rand.Rand) (string, error)
}

// ctr is a container of the soak's pool, on its server.
type ctr struct{ name, server string }

// ctrs is the soak's pool of six containers, spread over the bed's servers.
func (b *Bed) ctrs() []ctr {
	var out []ctr
	for i := range 6 {
		out = append(out, ctr{fmt.Sprintf("sk%d", i+1), b.Servers[i%len(b.Servers)]})
	}
	return out
}

// epServer holds the Consul endpoint.
func (b *Bed) epServer() string { return b.Servers[1%len(b.Servers)] }

// cli runs the CLI against the bed as the admin, with stdin.
func (b *Bed) cli(stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	base := []string{"--nats", strings.Join(b.URLs, ","), "--creds", b.AdminCreds}
	if b.CA != "" {
		base = append(base, "--tls-ca", b.CA)
	}
	cmd := exec.CommandContext(ctx, b.SkeinBin, append(base, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

func (b *Bed) must(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := b.cli(stdin, append(args, "--timeout", "120s")...)
	if err != nil {
		t.Fatalf("skein %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// consulNode is a node of the endpoint's catalog (nil when it has none).
func (b *Bed) consulNode(node string) (*api.CatalogNode, error) {
	data, err := b.ConsulGet("/v1/catalog/node/" + node + "?stale")
	if err != nil {
		return nil, err
	}
	var n *api.CatalogNode
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("consul: %s: %v", data, err)
	}
	return n, nil
}

// Size is the number of commands and the seed, from the environment.
func Size() (int, uint64) {
	n, seed := 200, uint64(time.Now().UnixNano()%1_000_000)
	if v, err := strconv.Atoi(os.Getenv("SKEIN_SOAK_COMMANDS")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.ParseUint(os.Getenv("SKEIN_SOAK_SEED"), 10, 64); err == nil {
		seed = v
	}
	return n, seed
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The soak's pools: what its commands act on.
var (
	soakServices = []struct {
		name string
		port int
	}{{"sa", 80}, {"sb", 81}}
	soakLBs      = []string{"soaklb1", "soaklb2"}
	soakBackends = []string{"b1", "b2", "b3", "b4", "b5", "b6"}
	soakApps     = []string{"a1.soak.test", "a2.soak.test", "a3.soak.test", "a4.soak.test", "a5.soak.test"}
	soakDBs      = []string{"d1", "d2", "d3", "d4", "d5"}
)

// keepRows are the count and sum of the 1,000 rows written before the faults.
const keepRows = "1000 500500"

const (
	soakWS, soakDB, soakUser, soakJob = "soakws", "soakdb", "soaku", "soakjob"
	soakPassword                      = "Soak-pw-4Kx-91"
)

// model is what should be, from the commands that succeeded.
type model struct {
	ctrs     map[string]string          // container → Running, Stopped (absent when missing)
	services map[string]map[string]bool // container → services
	checks   map[string]bool            // containers with the check "up"
	backends map[string]map[string]bool // lb → backends
	apps     map[string]bool
	dbs      map[string]bool
	jobCount int
}

// command is one command of the workload and what became of it.
type command struct {
	n      int
	id     string
	kind   string // the verb
	key    string // the resource it holds while it runs
	args   []string
	apply  func(m *model)
	expect func(o *observer, since time.Time) bool // the change the observer must have seen
	start  time.Time
	done   time.Duration
	ok     bool
	errMsg string
	// late: the CLI failed but the agent's result, read from the results stream, decided.
	late string
	// tries is how many times the CLI ran.
	tries int
}

// soak runs the workload, the faults and the checker on a bed.
type soak struct {
	t     *testing.T
	bed   *Bed
	rng   *rand.Rand
	mu    sync.Mutex
	model *model
	busy  map[string]bool
	seed  uint64
	n     int
	only  string
	cmds  []*command
	obs   *observer
	// faults counts the faults injected, by kind; lastFault is when the last ended.
	faults    map[string]int
	lastFault time.Time
	started   time.Time
	run36     string
	// busKills are when bus nodes were killed.
	busKills []time.Time
}

// observer is subscribed from the start to the results and events streams,
// as an external system would be: every change is an event.
type observer struct {
	mu      sync.Mutex
	results map[string][]events.Result
	evs     []observed
	stop    []func()
}

type observed struct {
	at   time.Time
	kind string // the event's type
	data []byte
}

func newObserver(t *testing.T, js jetstream.JetStream, start time.Time) *observer {
	o := &observer{results: map[string][]events.Result{}}
	ctx := context.Background()
	follow := func(stream string, each func(jetstream.Msg)) {
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start})
		if err != nil {
			t.Fatalf("observer on %s: %v", stream, err)
		}
		cc, err := cons.Consume(each)
		if err != nil {
			t.Fatalf("observer on %s: %v", stream, err)
		}
		o.stop = append(o.stop, cc.Stop)
	}
	follow(bus.StreamResults, func(m jetstream.Msg) {
		var env events.Envelope
		var r events.Result
		if json.Unmarshal(m.Data(), &env) == nil && json.Unmarshal(env.Data, &r) == nil {
			o.mu.Lock()
			o.results[r.Command] = append(o.results[r.Command], r)
			o.mu.Unlock()
		}
	})
	follow(bus.StreamEvents, func(m jetstream.Msg) {
		var env events.Envelope
		if json.Unmarshal(m.Data(), &env) == nil {
			md, _ := m.Metadata()
			o.mu.Lock()
			o.evs = append(o.evs, observed{at: md.Timestamp, kind: env.Type, data: env.Data})
			o.mu.Unlock()
		}
	})
	return o
}

// awaitObserver waits up to patience for the observer to hold a result of
// every command that succeeded and to have seen each one's change; it says
// how long that took.
func (s *soak) awaitObserver(patience time.Duration) time.Duration {
	start := time.Now()
	for {
		caughtUp := true
		s.obs.mu.Lock()
		for _, c := range s.cmds {
			if c.ok && len(s.obs.results[c.id]) == 0 {
				caughtUp = false
				break
			}
		}
		s.obs.mu.Unlock()
		for _, c := range s.cmds {
			if caughtUp && c.ok && !c.expect(s.obs, c.start) {
				caughtUp = false
			}
		}
		if caughtUp || time.Since(start) > patience {
			return time.Since(start)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// storedResult says whether the results stream holds a result of command id,
// read from the stream itself rather than by the observer.
func (s *soak) storedResult(id string) (bool, error) {
	nc, err := nats.Connect(strings.Join(s.bed.URLs, ","), nats.UserCredentials(s.bed.AdminCreds), tlsOpt(s.bed.CA))
	if err != nil {
		return false, err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := bus.LastStored(ctx, nc, bus.StreamResults, bus.AnyResultSubject(id))
	return m != nil, err
}

func (o *observer) close() {
	for _, f := range o.stop {
		f()
	}
}

// saw says whether the observer saw, since a time, a change of kind that match accepts.
func (o *observer) saw(kind string, since time.Time, match func(data []byte) bool) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range o.evs {
		if e.kind == kind && !e.at.Before(since.Add(-time.Second)) && match(e.data) {
			return true
		}
	}
	return false
}

// field decodes one field of a record or event.
func field[T any](data []byte) (v T) {
	_ = json.Unmarshal(data, &v)
	return v
}

type named struct {
	Name   string `json:"name"`
	Server string `json:"server"`
}

func (s *soak) logf(format string, args ...any) {
	s.t.Logf("soak[%s]: "+format, append([]any{s.bed.Name}, args...)...)
}

// next picks the next command from the seeded generator, on a resource no
// command holds now, and marks it held.
func (s *soak) next() *command {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tries := 0; tries < 100; tries++ {
		c := s.pick()
		if c == nil || s.busy[c.key] {
			continue
		}
		s.busy[c.key] = true
		c.n = len(s.cmds)
		// The run's own ids: a command sent again under an id already used is done once, not again.
		c.id = fmt.Sprintf("soak-%d-%s-%d", s.seed, s.run36, c.n)
		s.cmds = append(s.cmds, c)
		return c
	}
	return nil
}

// pick draws a command: the kind by weight, the item at random, the verb from the model.
func (s *soak) pick() *command {
	m := s.model
	r := s.rng
	w := r.IntN(100)
	if s.only == "backends" {
		w = 50 + r.IntN(20)
	}
	switch {
	case w < 30: // containers
		ct := s.bed.ctrs()[r.IntN(6)]
		name := ct.name
		switch st := m.ctrs[name]; {
		case st == "":
			return &command{kind: "launch", key: name, args: []string{"launch", "skein-busybox", name, "-s", ct.server},
				apply:  func(m *model) { m.ctrs[name] = "Running" },
				expect: containerEvent(events.TypeContainerStarted, name)}
		case r.IntN(4) == 0:
			return &command{kind: "delete", key: name, args: []string{"delete", name},
				apply:  func(m *model) { delete(m.ctrs, name); delete(m.services, name); delete(m.checks, name) },
				expect: containerEvent(events.TypeContainerDeleted, name)}
		case st == "Running":
			return &command{kind: "stop", key: name, args: []string{"stop", name},
				apply:  func(m *model) { m.ctrs[name] = "Stopped" },
				expect: containerEvent(events.TypeContainerStopped, name)}
		default:
			return &command{kind: "start", key: name, args: []string{"start", name},
				apply:  func(m *model) { m.ctrs[name] = "Running" },
				expect: containerEvent(events.TypeContainerStarted, name)}
		}
	case w < 50: // services and checks of an existing container
		ct := s.bed.ctrs()[r.IntN(6)]
		name := ct.name
		if m.ctrs[name] == "" {
			return nil
		}
		if r.IntN(3) == 0 {
			if m.checks[name] {
				return &command{kind: "delcheck", key: name, args: []string{"delcheck", name, "up"},
					apply:  func(m *model) { delete(m.checks, name) },
					expect: defsSeen(name, func(d events.Definitions) bool { return len(d.Checks) == 0 })}
			}
			return &command{kind: "addcheck", key: name, args: []string{"addcheck", name, "up", "tcp", "80", "--interval", "2s", "--timeout", "1s"},
				apply:  func(m *model) { m.checks[name] = true },
				expect: defsSeen(name, func(d events.Definitions) bool { return len(d.Checks) == 1 })}
		}
		sv := soakServices[r.IntN(len(soakServices))]
		has := func(d events.Definitions) bool {
			for _, x := range d.Services {
				if x.Name == sv.name {
					return true
				}
			}
			return false
		}
		if m.services[name][sv.name] {
			return &command{kind: "delservice", key: name, args: []string{"delservice", name, sv.name},
				apply:  func(m *model) { delete(m.services[name], sv.name) },
				expect: defsSeen(name, func(d events.Definitions) bool { return !has(d) })}
		}
		return &command{kind: "addservice", key: name, args: []string{"addservice", name, sv.name, strconv.Itoa(sv.port)},
			apply: func(m *model) {
				if m.services[name] == nil {
					m.services[name] = map[string]bool{}
				}
				m.services[name][sv.name] = true
			},
			expect: defsSeen(name, has)}
	case w < 70: // backends
		lb, be := soakLBs[r.IntN(len(soakLBs))], soakBackends[r.IntN(len(soakBackends))]
		// lb.changed names the backends a change added and removed.
		told := func(removed bool) func(*observer, time.Time) bool {
			return func(o *observer, since time.Time) bool {
				return o.saw(events.TypeLBChanged, since, func(d []byte) bool {
					c := field[events.LBChange](d)
					names := c.Added
					if removed {
						names = c.Removed
					}
					return c.Name == lb && contains(names, be)
				})
			}
		}
		if m.backends[lb][be] {
			return &command{kind: "delbackends", key: lb + "/" + be, args: []string{"delbackends", lb, be},
				apply: func(m *model) { delete(m.backends[lb], be) }, expect: told(true)}
		}
		i := 10 + indexOf(soakBackends, be)
		return &command{kind: "addbackends", key: lb + "/" + be, args: []string{"addbackends", lb, fmt.Sprintf("%s:10.77.9.%d:80", be, i)},
			apply: func(m *model) { m.backends[lb][be] = true }, expect: told(false)}
	case w < 82: // apps
		url := soakApps[r.IntN(len(soakApps))]
		if m.apps[url] {
			return &command{kind: "delapp", key: url, args: []string{"delapp", soakWS, url},
				apply:  func(m *model) { delete(m.apps, url) },
				expect: appEvent(events.TypeAppRemoved, url)}
		}
		return &command{kind: "pubapp", key: url, args: []string{"pubapp", soakWS, url, "10.77.9.50:80"},
			apply:  func(m *model) { m.apps[url] = true },
			expect: appEvent(events.TypeAppPublished, url)}
	case w < 94: // databases
		db := soakDBs[r.IntN(len(soakDBs))]
		if m.dbs[db] {
			return &command{kind: "deldb", key: db, args: []string{"deldb", soakDB, db},
				apply:  func(m *model) { delete(m.dbs, db) },
				expect: dbEvent("database-removed", db)}
		}
		return &command{kind: "adddb", key: db, args: []string{"adddb", "--on", soakDB, soakUser, db},
			apply:  func(m *model) { m.dbs[db] = true },
			expect: dbEvent("database-added", db)}
	default: // the job
		n := 1 + r.IntN(4)
		if n == m.jobCount {
			n = n%4 + 1
		}
		return &command{kind: "scalejob", key: soakJob, args: []string{"scalejob", soakJob, strconv.Itoa(n), "--detach"},
			apply: func(m *model) { m.jobCount = n },
			expect: func(o *observer, since time.Time) bool {
				return o.saw(events.TypeJobChanged, since, func(d []byte) bool {
					c := field[events.JobChange](d)
					return c.Job == soakJob && c.Change == "scaled" && c.Count == n
				})
			}}
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

func containerEvent(typ, name string) func(*observer, time.Time) bool {
	return func(o *observer, since time.Time) bool {
		return o.saw(typ, since, func(d []byte) bool { return field[named](d).Name == name })
	}
}

func defsSeen(name string, match func(events.Definitions) bool) func(*observer, time.Time) bool {
	return func(o *observer, since time.Time) bool {
		return o.saw(events.TypeServiceDefined, since, func(d []byte) bool {
			defs := field[events.Definitions](d)
			return defs.Container == name && match(defs)
		})
	}
}

func appEvent(typ, url string) func(*observer, time.Time) bool {
	return func(o *observer, since time.Time) bool {
		return o.saw(typ, since, func(d []byte) bool { return field[events.AppEvent](d).URL == url })
	}
}

func dbEvent(change, db string) func(*observer, time.Time) bool {
	return func(o *observer, since time.Time) bool {
		return o.saw(events.TypeDBChanged, since, func(d []byte) bool {
			c := field[events.DBChange](d)
			return c.Instance == soakDB && c.Change == change && c.DB == db
		})
	}
}

// run sends one command and settles what became of it, as a careful client
// does: a CLI that failed without the agent's answer (the bus or the agent
// away) is run again under the same id, up to 6 times, 2 s apart; skein
// does a command once whatever the number of sends. The agent's answer,
// when there is one, is the result; else the CLI's last error.
func (s *soak) run(c *command) {
	c.start = time.Now()
	args := append(c.args, "--id", c.id)
	if c.kind != "addcheck" { // whose --timeout is the check's
		args = append(args, "--timeout", "90s")
	}
	for try := 1; ; try++ {
		c.tries = try
		out, errOut, err := s.bed.cli("", args...)
		c.ok = err == nil
		c.errMsg = strings.TrimSpace(errOut)
		if err != nil && c.errMsg == "" {
			c.errMsg = strings.TrimSpace(out) + " " + err.Error()
		}
		if c.ok {
			break
		}
		// The agent's answer, if it gave one, comes on the results stream.
		var rs []events.Result
		for wait := time.Now(); time.Since(wait) < time.Second && len(rs) == 0; time.Sleep(100 * time.Millisecond) {
			s.obs.mu.Lock()
			rs = s.obs.results[c.id]
			s.obs.mu.Unlock()
		}
		if len(rs) > 0 {
			if rs[0].OK {
				c.ok, c.late = true, fmt.Sprintf("the CLI said %q; the agent's result says ok", c.errMsg)
			} else if rs[0].Error != nil {
				c.errMsg = rs[0].Error.Message
			}
			break
		}
		if try == 6 {
			break
		}
		time.Sleep(2 * time.Second)
	}
	c.done = time.Since(c.start)
	s.mu.Lock()
	if c.ok {
		c.apply(s.model)
	}
	delete(s.busy, c.key)
	s.mu.Unlock()
}

// fault injects one fault of kind and undoes it; it returns what it did.
func (s *soak) fault(kind string, r *rand.Rand) string {
	b := s.bed
	switch kind {
	case "stop-endpoint":
		_, _ = b.Incus(b.epServer(), "stop", "--force", b.EPName)
		time.Sleep(3 * time.Second)
		_, _ = b.Incus(b.epServer(), "start", b.EPName)
		return "Consul endpoint's container stopped and started"
	case "behind-back":
		// A container the workload is not touching, stopped or deleted with the incus CLI.
		s.mu.Lock()
		var cands []string
		for _, ct := range b.ctrs() {
			if s.model.ctrs[ct.name] != "" && !s.busy[ct.name] {
				cands = append(cands, ct.name)
			}
		}
		if len(cands) == 0 {
			s.mu.Unlock()
			return ""
		}
		name := cands[r.IntN(len(cands))]
		s.busy[name] = true
		st := s.model.ctrs[name]
		s.mu.Unlock()
		server := ""
		for _, ct := range b.ctrs() {
			if ct.name == name {
				server = ct.server
			}
		}
		what := "deleted"
		var err error
		if st == "Running" && r.IntN(2) == 0 {
			what = "stopped"
			_, err = b.Incus(server, "stop", "--force", name)
		} else {
			_, err = b.Incus(server, "delete", "--force", name)
		}
		s.mu.Lock()
		if err == nil {
			if what == "stopped" {
				s.model.ctrs[name] = "Stopped"
			} else {
				delete(s.model.ctrs, name)
				delete(s.model.services, name)
				delete(s.model.checks, name)
			}
		}
		s.mu.Unlock()
		// The agent sees it within its reconcile period; the workload leaves it alone till then.
		time.Sleep(2 * time.Second)
		s.mu.Lock()
		delete(s.busy, name)
		s.mu.Unlock()
		return fmt.Sprintf("container %s %s with the incus CLI", name, what)
	}
	for _, f := range b.Faults {
		if f.Kind == kind {
			if f.BusLoss {
				s.mu.Lock()
				s.busKills = append(s.busKills, time.Now())
				s.mu.Unlock()
			}
			what, err := f.Do(r)
			if err != nil {
				s.t.Errorf("fault %s (%s): %v", kind, what, err)
			}
			return what
		}
	}
	return ""
}

// kinds are the faults this soak injects: its own, then the bed's.
func (s *soak) kinds() []string {
	k := []string{"stop-endpoint", "behind-back"}
	for _, f := range s.bed.Faults {
		k = append(k, f.Kind)
	}
	// SKEIN_SOAK_FAULTS=kind,kind keeps to those (to try one fault).
	if only := os.Getenv("SKEIN_SOAK_FAULTS"); only != "" {
		k = slices.DeleteFunc(k, func(kind string) bool { return !slices.Contains(strings.Split(only, ","), kind) })
	}
	return k
}

// setUp makes the soak's fixed resources: an endpoint, two load balancers, a
// web server, a database instance and a job.
func (s *soak) setUp(t *testing.T, epIP string) {
	b := s.bed
	ep1, ep2 := b.Servers[0], b.epServer()
	if s.only != "backends" {
		// The endpoint's fixed address first: a load balancer made before it
		// may be given that address (CI: "address 10.77.5.70 is already used
		// by container soaklb2").
		b.must(t, "", "addep", ep2, epIP, "-n", b.EPName)
	}
	b.must(t, "", "addlb", "haproxy", ep1, "-n", soakLBs[0])
	b.must(t, "", "addlb", "haproxy", ep2, "-n", soakLBs[1])
	if s.only == "backends" {
		return
	}
	b.must(t, "", "addws", b.Servers[len(b.Servers)-1], "-n", soakWS)
	b.must(t, soakPassword+"\n", "adddb", "mysql", ep1, soakUser, "d0", "-n", soakDB, "-p", "-")
	// Data the faults must not lose: checked with the rest at the end.
	if out, err := b.InContainer(ep1, soakDB, "mariadb d0 -e 'CREATE TABLE keep (n INT PRIMARY KEY); INSERT INTO keep SELECT seq FROM seq_1_to_1000'"); err != nil {
		t.Fatalf("writing the rows to keep in %s: %v %s", soakDB, err, out)
	}
	b.must(t, "", "addjob", "skein-busybox", "2", "--name", soakJob)
	s.model.jobCount = 2
}

func (s *soak) tearDown() {
	b := s.bed
	for _, args := range [][]string{{"deljob", soakJob}, {"deldbinstance", soakDB, "--purge"}, {"delws", soakWS}, {"dellb", soakLBs[0]}, {"dellb", soakLBs[1]}, {"delep", b.EPName}} {
		_, _, _ = b.cli("", append(args, "--timeout", "120s")...)
	}
	for _, ct := range b.ctrs() {
		_, _, _ = b.cli("", "delete", ct.name)
	}
}

// Options size a soak: N commands from Seed; Only "backends" narrows the
// workload and the checker to the load balancers' backends, without faults.
type Options struct {
	N    int
	Seed uint64
	Only string
}

// runSoak runs the workload of n commands, 8 in flight, with faults while it
// runs, then checks; it returns the violations found.
func Run(t *testing.T, bed *Bed, o Options) []string {
	n, seed := o.N, o.Seed
	s := &soak{t: t, bed: bed, seed: seed, n: n, only: o.Only, rng: rand.New(rand.NewPCG(seed, 1)), busy: map[string]bool{}, faults: map[string]int{},
		model: &model{ctrs: map[string]string{}, services: map[string]map[string]bool{}, checks: map[string]bool{}, backends: map[string]map[string]bool{}, apps: map[string]bool{}, dbs: map[string]bool{}}}
	for _, lb := range soakLBs {
		s.model.backends[lb] = map[string]bool{}
	}
	s.run36 = strconv.FormatInt(time.Now().UnixNano()%(36*36*36*36*36*36), 36)
	s.logf("seed %d, %d commands, 8 in flight %s", seed, n, o.Only)
	t.Cleanup(s.tearDown)
	s.tearDown() // what an earlier run may have left
	setUp := time.Now()
	s.setUp(t, bed.EP)
	s.logf("set up in %s", time.Since(setUp).Round(100*time.Millisecond))

	nc, err := nats.Connect(strings.Join(bed.URLs, ","), nats.UserCredentials(bed.AdminCreds), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond), tlsOpt(bed.CA))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	start := time.Now()
	s.started = start
	s.obs = newObserver(t, js, start)
	defer s.obs.close()

	// The fault injector: one fault at a time, 1 to 2 s apart, in rounds of
	// every kind in a seeded order; it ends with the round during which the
	// workload ends.
	stopFaults := make(chan struct{})
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		if s.only != "" {
			return
		}
		r := rand.New(rand.NewPCG(seed, 2))
		for {
			order := s.kinds()
			if len(order) == 0 {
				t.Errorf("SKEIN_SOAK_FAULTS=%q names none of this bed's faults", os.Getenv("SKEIN_SOAK_FAULTS"))
				return
			}
			r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, kind := range order {
				time.Sleep(time.Duration(1000+r.IntN(1000)) * time.Millisecond)
				if what := s.fault(kind, r); what != "" {
					s.mu.Lock()
					s.faults[kind]++
					s.lastFault = time.Now()
					s.mu.Unlock()
					s.logf("fault at +%s: %s", time.Since(start).Round(100*time.Millisecond), what)
				}
			}
			select {
			case <-stopFaults:
				return
			default:
			}
		}
	}()

	// The workload: 8 workers take commands from the seeded generator.
	var wg sync.WaitGroup
	var issued sync.Mutex
	count := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				issued.Lock()
				if count >= n {
					issued.Unlock()
					return
				}
				c := s.next()
				if c == nil {
					issued.Unlock()
					time.Sleep(50 * time.Millisecond)
					continue
				}
				count++
				if count%50 == 0 {
					s.logf("%d of %d commands issued (+%s)", count, n, time.Since(start).Round(time.Second))
				}
				issued.Unlock()
				s.run(c)
			}
		}()
	}
	wg.Wait()
	close(stopFaults)
	<-faultsDone
	s.logf("workload done after %s", time.Since(start).Round(100*time.Millisecond))
	return s.check(t)
}

func tlsOpt(ca string) nats.Option {
	if ca == "" {
		return func(*nats.Options) error { return nil }
	}
	return nats.RootCAs(ca)
}

// check waits for the cluster to converge on the model (up to 2 minutes),
// then compares state and history with it; it prints a table and returns
// the violations, each named.
func (s *soak) check(t *testing.T) []string {
	var state []string
	ended := time.Now()
	patience := 2 * time.Minute
	if s.only != "" {
		patience = 30 * time.Second // no faults to recover from
	}
	for {
		state = s.compare(t)
		if len(state) == 0 || time.Since(ended) > patience {
			break
		}
		time.Sleep(time.Second)
	}
	// From the end of the last fault (the injector ends its round before the
	// workload is done) to the first comparison that found nothing.
	convergence, after := time.Since(s.lastFault), "the last fault ended"
	if s.lastFault.IsZero() {
		convergence, after = time.Since(ended), "the workload"
	}
	// The observer's ordered consumers may still be coming back from a NATS
	// node's loss (found by CI: the last command's result, stored moments
	// after a kill, reached the observer after the state had converged).
	behind := s.awaitObserver(2 * time.Minute)
	var hist []string
	lost, twice, missed, unexplained, late, retried := 0, 0, 0, 0, 0, 0
	var noResult []*command
	byKind := map[string][2]int{}
	s.obs.mu.Lock()
	for _, c := range s.cmds {
		k := byKind[c.kind]
		if c.ok {
			k[0]++
		} else {
			k[1]++
		}
		byKind[c.kind] = k
		rs := s.obs.results[c.id]
		switch {
		case c.ok && len(rs) == 0:
			noResult = append(noResult, c)
		case len(rs) > 1:
			twice++
			hist = append(hist, fmt.Sprintf("two results: command %d (%s) has %d", c.n, c.kind, len(rs)))
		}
		if !c.ok && (c.errMsg == "" || strings.Contains(c.errMsg, "goroutine ") || c.errMsg == "context deadline exceeded") {
			unexplained++
			hist = append(hist, fmt.Sprintf("unexplained error: command %d (%s): %q", c.n, c.kind, c.errMsg))
		}
		if c.late != "" {
			late++
		}
		if c.tries > 1 {
			retried++
		}
	}
	s.obs.mu.Unlock()
	// Read from the stream itself (outside the observer's lock): absent
	// there is lost, present there the observer missed it.
	for _, c := range noResult {
		switch stored, err := s.storedResult(c.id); {
		case err != nil:
			unexplained++
			hist = append(hist, fmt.Sprintf("unchecked: command %d (%s) succeeded, the observer saw no result and the results stream could not be read: %v", c.n, c.kind, err))
		case !stored:
			lost++
			hist = append(hist, fmt.Sprintf("lost: command %d (%s %s) succeeded and the results stream has no result for it", c.n, c.kind, strings.Join(c.args[1:], " ")))
		default:
			missed++
			hist = append(hist, fmt.Sprintf("missed result: command %d (%s %s) has its result in the results stream and the observer, subscribed from the start, never saw it", c.n, c.kind, strings.Join(c.args[1:], " ")))
		}
	}
	for _, c := range s.cmds {
		if c.ok && !c.expect(s.obs, c.start) {
			missed++
			hist = append(hist, fmt.Sprintf("missed event: command %d (%s %s) succeeded and the observer saw no change", c.n, c.kind, strings.Join(c.args[1:], " ")))
		}
	}
	ghosts, applied, dataLost := 0, 0, 0
	for _, v := range state {
		switch {
		case strings.HasPrefix(v, "data lost"):
			dataLost++
		case strings.HasPrefix(v, "applied twice"):
			applied++
		case strings.HasPrefix(v, "ghost"), strings.HasPrefix(v, "untracked"), strings.HasPrefix(v, "stale"):
			ghosts++
		}
	}
	var kinds []string
	for k := range byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	fmt.Fprintf(&b, "\nsoak on %s, seed %d: %d commands\n", s.bed.Name, s.seed, len(s.cmds))
	fmt.Fprintf(&b, "  %-12s %6s %6s\n", "command", "ok", "error")
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %-12s %6d %6d\n", k, byKind[k][0], byKind[k][1])
	}
	fmt.Fprintf(&b, "  faults:")
	for _, k := range s.kinds() {
		fmt.Fprintf(&b, " %s %d;", k, s.faults[k])
	}
	fmt.Fprintf(&b, "\n  lost %d, two results %d, applied twice %d, ghosts/stale %d, data lost %d, other state %d, missed events %d, unexplained errors %d\n  sent again under the same id after a CLI failure: %d; of which the CLI failed and the agent's result decided: %d\n",
		lost, twice, applied, ghosts, dataLost, len(state)-applied-ghosts-dataLost, missed, unexplained, retried, late)
	if len(state) == 0 {
		fmt.Fprintf(&b, "  converged %s after %s; the observer had every result %s later\n", convergence.Round(100*time.Millisecond), after, behind.Round(100*time.Millisecond))
	} else {
		fmt.Fprintf(&b, "  not converged %s after the workload\n", patience)
	}
	// From each kill of a bus node to the first command sent after it that succeeded.
	var recoveries []string
	for _, k := range s.busKills {
		best := time.Duration(-1)
		for _, c := range s.cmds {
			if c.ok && c.start.After(k) && c.late == "" {
				if d := c.start.Add(c.done).Sub(k); best < 0 || d < best {
					best = d
				}
			}
		}
		if best >= 0 {
			recoveries = append(recoveries, best.Round(100*time.Millisecond).String())
		}
	}
	if len(recoveries) > 0 {
		fmt.Fprintf(&b, "  from each kill of a bus node to the first command sent after it done: %s\n", strings.Join(recoveries, ", "))
	}
	errs := map[string]int{}
	for _, c := range s.cmds {
		if !c.ok {
			msg := c.errMsg
			if len(msg) > 90 {
				msg = msg[:90]
			}
			errs[msg]++
		}
	}
	for m, k := range errs {
		fmt.Fprintf(&b, "  error x%d: %s\n", k, m)
	}
	t.Log(b.String())
	// The history, a line per command, beside the processes' logs.
	var h strings.Builder
	for _, c := range s.cmds {
		fmt.Fprintf(&h, "%d %s %s +%s %s tries=%d ok=%v %q %s\n", c.n, c.id, strings.Join(c.args, " "), c.start.Sub(s.started).Round(time.Millisecond), c.done.Round(time.Millisecond), c.tries, c.ok, c.errMsg, c.late)
	}
	_ = os.WriteFile(filepath.Join(s.bed.LogDir, fmt.Sprintf("soak-%s-%d.history", s.bed.Tag, s.seed)), []byte(h.String()), 0o644)
	return append(state, hist...)
}

// compare reads what runs and what is recorded and compares both with the model.
func (s *soak) compare(t *testing.T) []string {
	var out []string
	b := s.bed
	s.mu.Lock()
	m := s.model
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Records, read from the buckets.
	nc, err := nats.Connect(strings.Join(b.URLs, ","), nats.UserCredentials(b.AdminCreds), tlsOpt(b.CA))
	if err != nil {
		return []string{"cannot read the records: " + err.Error()}
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	records := func(bucket string) map[string][]byte {
		out := map[string][]byte{}
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			return out
		}
		keys, _ := kv.ListKeys(ctx)
		for k := range keys.Keys() {
			if e, err := kv.Get(ctx, k); err == nil {
				out[k] = e.Value()
			}
		}
		return out
	}
	// Containers: the model, the records and Incus.
	recCtrs := map[string]events.Container{}
	for _, d := range records("skein_containers") {
		c := field[events.Container](d)
		recCtrs[c.Name] = c
	}
	incus := map[string][]string{} // name → statuses in every project
	for _, sv := range b.Servers {
		o, err := b.Incus(sv, "list", "-f", "csv", "-c", "ns")
		if err != nil {
			return []string{"incus list: " + err.Error()}
		}
		for _, l := range strings.Split(strings.TrimSpace(o), "\n") {
			if name, st, ok := strings.Cut(l, ","); ok {
				incus[name] = append(incus[name], capital(st))
			}
		}
	}
	for _, ct := range b.ctrs() {
		if s.only != "" {
			break
		}
		want := m.ctrs[ct.name]
		rec, inRec := recCtrs[ct.name]
		got := incus[ct.name]
		switch {
		case len(got) > 1:
			out = append(out, fmt.Sprintf("applied twice: container %s is %d Incus instances", ct.name, len(got)))
		case want == "" && len(got) == 1:
			out = append(out, fmt.Sprintf("untracked: container %s runs (%s) but the model has it deleted", ct.name, got[0]))
		case want != "" && len(got) == 0:
			out = append(out, fmt.Sprintf("lost update: container %s is %s in the model but not in Incus", ct.name, want))
		case want != "" && got[0] != want:
			out = append(out, fmt.Sprintf("state: container %s is %s in the model, %s in Incus", ct.name, want, got[0]))
		}
		switch {
		case inRec && len(got) == 0:
			out = append(out, fmt.Sprintf("ghost: record of container %s with no Incus instance", ct.name))
		case !inRec && len(got) > 0:
			out = append(out, fmt.Sprintf("untracked: container %s in Incus without a record", ct.name))
		case inRec && len(got) == 1 && rec.Status != got[0]:
			out = append(out, fmt.Sprintf("stale: record of %s says %s, Incus %s", ct.name, rec.Status, got[0]))
		}
	}
	// Services and checks: the records and Consul.
	defs := map[string]events.Definitions{}
	for _, d := range records("skein_services") {
		x := field[events.Definitions](d)
		defs[x.Container] = x
	}
	for _, ct := range b.ctrs() {
		if s.only != "" {
			break
		}
		name := ct.name
		var want []string
		for sv := range m.services[name] {
			want = append(want, sv)
		}
		sort.Strings(want)
		d, has := defs[name]
		var rec []string
		for _, x := range d.Services {
			rec = append(rec, x.Name)
		}
		sort.Strings(rec)
		if m.ctrs[name] == "" && has {
			out = append(out, fmt.Sprintf("ghost: definitions of deleted container %s", name))
		}
		if fmt.Sprint(rec) != fmt.Sprint(want) {
			out = append(out, fmt.Sprintf("lost update: services of %s: model %v, record %v", name, want, rec))
		}
		if (len(d.Checks) == 1) != m.checks[name] {
			out = append(out, fmt.Sprintf("lost update: check of %s: model %v, record %d", name, m.checks[name], len(d.Checks)))
		}
		// Each server's nodes carry its name first (discovery.NodePrefix).
		node, err := b.consulNode(discovery.NodePrefix(ct.server) + name)
		if err != nil {
			out = append(out, "consul: "+err.Error())
			continue
		}
		var inConsul []string
		if node != nil {
			for _, sv := range node.Services {
				inConsul = append(inConsul, sv.Service)
			}
		}
		sort.Strings(inConsul)
		switch {
		case m.ctrs[name] != "Running" && node != nil && len(inConsul) > 0:
			out = append(out, fmt.Sprintf("ghost: Consul has %v for %s, which is %s", inConsul, name, orGone(m.ctrs[name])))
		case m.ctrs[name] == "Running" && fmt.Sprint(inConsul) != fmt.Sprint(want):
			out = append(out, fmt.Sprintf("state: Consul has %v for %s, the model %v", inConsul, name, want))
		}
	}
	// Backends: the records and haproxy's runtime API.
	lbs := map[string][]string{}
	lbServer := map[string]string{}
	for _, d := range records("skein_lbs") {
		l := field[struct {
			named
			Backends []named `json:"backends"`
		}](d)
		lbServer[l.Name] = l.Server
		for _, be := range l.Backends {
			lbs[l.Name] = append(lbs[l.Name], be.Name)
		}
	}
	for _, lb := range soakLBs {
		var want []string
		for be := range m.backends[lb] {
			want = append(want, be)
		}
		sort.Strings(want)
		rec := lbs[lb]
		sort.Strings(rec)
		if fmt.Sprint(rec) != fmt.Sprint(want) {
			out = append(out, fmt.Sprintf("lost update: backends of %s: model %v, record %v", lb, want, rec))
		}
		running, err := b.LBBackends(lbServer[lb], lb)
		if err != nil {
			out = append(out, fmt.Sprintf("state: haproxy of %s: %v", lb, err))
			continue
		}
		sort.Strings(running)
		if extra, missing := diff(running, want); len(extra)+len(missing) > 0 {
			out = append(out, fmt.Sprintf("state: haproxy of %s runs %v, the model %v (not in the model: %v; missing: %v)", lb, running, want, extra, missing))
		}
		seen := map[string]int{}
		for _, name := range running {
			if seen[name]++; seen[name] == 2 {
				out = append(out, fmt.Sprintf("applied twice: haproxy of %s runs backend %s twice", lb, name))
			}
		}
	}
	if s.only != "" {
		return out
	}
	// Apps: the record and nginx's site file.
	var wsRec struct {
		named
		Apps []struct {
			URL string `json:"url"`
		} `json:"apps"`
	}
	for _, d := range records("skein_ws") {
		if x := field[named](d); x.Name == soakWS {
			_ = json.Unmarshal(d, &wsRec)
		}
	}
	site, err := b.InContainer(wsRec.Server, soakWS, "cat /etc/nginx/sites-enabled/default")
	if err != nil {
		out = append(out, "state: nginx site of "+soakWS+": "+err.Error())
	}
	for _, url := range soakApps {
		inRec := false
		for _, a := range wsRec.Apps {
			inRec = inRec || a.URL == url
		}
		n := strings.Count(site, "server_name "+url+";")
		switch {
		case inRec != m.apps[url]:
			out = append(out, fmt.Sprintf("lost update: app %s: model %v, record %v", url, m.apps[url], inRec))
		case n > 1:
			out = append(out, fmt.Sprintf("applied twice: app %s is %d servers in nginx", url, n))
		case (n == 1) != m.apps[url]:
			out = append(out, fmt.Sprintf("state: app %s: model %v, nginx has it %d times", url, m.apps[url], n))
		}
	}
	// Databases: the record and MariaDB.
	var dbRec struct {
		named
		Databases []named `json:"databases"`
		Users     []named `json:"users"`
	}
	for _, d := range records("skein_dbs") {
		if x := field[named](d); x.Name == soakDB {
			_ = json.Unmarshal(d, &dbRec)
		}
	}
	shown, err := b.InContainer(dbRec.Server, soakDB, "mariadb --batch --skip-column-names -e 'SHOW DATABASES'")
	if err != nil {
		out = append(out, "state: databases of "+soakDB+": "+err.Error())
	}
	users, _ := b.InContainer(dbRec.Server, soakDB, "mariadb --batch --skip-column-names -e \"SELECT COUNT(DISTINCT user) FROM mysql.user WHERE user='"+soakUser+"'\"")
	if users != "1" {
		out = append(out, fmt.Sprintf("applied twice: MariaDB has %q users named %s", users, soakUser))
	}
	for _, db := range soakDBs {
		inRec := false
		for _, x := range dbRec.Databases {
			inRec = inRec || x.Name == db
		}
		inDB := contains(strings.Fields(shown), db)
		switch {
		case inRec != m.dbs[db]:
			out = append(out, fmt.Sprintf("lost update: database %s: model %v, record %v", db, m.dbs[db], inRec))
		case inDB != m.dbs[db]:
			out = append(out, fmt.Sprintf("state: database %s: model %v, MariaDB %v", db, m.dbs[db], inDB))
		}
	}
	// The rows written before the faults, each once.
	if kept, err := b.InContainer(dbRec.Server, soakDB, "mariadb --batch --skip-column-names d0 -e 'SELECT COUNT(*), SUM(n) FROM keep'"); strings.Join(strings.Fields(kept), " ") != keepRows {
		out = append(out, fmt.Sprintf("data lost: database d0 of %s holds %q rows and sum (%v), want %q", soakDB, kept, err, keepRows))
	}
	// The job: its record and its instances.
	for _, d := range records("skein_jobs") {
		if j := field[events.Job](d); j.Name == soakJob && j.Count != m.jobCount {
			out = append(out, fmt.Sprintf("lost update: job %s: model %d instances, record %d", soakJob, m.jobCount, j.Count))
		}
	}
	running := 0
	for _, c := range recCtrs {
		if c.Job == soakJob {
			if c.Status == "Running" {
				running++
			}
			if len(incus[c.Name]) == 0 {
				out = append(out, fmt.Sprintf("ghost: record of job instance %s with no Incus instance", c.Name))
			}
		}
	}
	inIncus := 0
	for name := range incus {
		if strings.HasPrefix(name, soakJob+"-") {
			inIncus += len(incus[name])
		}
	}
	if running != m.jobCount || inIncus != m.jobCount {
		out = append(out, fmt.Sprintf("state: job %s: model %d instances, %d running as recorded, %d in Incus", soakJob, m.jobCount, running, inIncus))
	}
	return out
}

// diff says what got has that want lacks, and what it misses.
func diff(got, want []string) (extra, missing []string) {
	for _, g := range got {
		if !contains(want, g) {
			extra = append(extra, g)
		}
	}
	for _, w := range want {
		if !contains(got, w) {
			missing = append(missing, w)
		}
	}
	return extra, missing
}

// capital writes RUNNING as Running, as skein's records do.
func capital(s string) string {
	if s == "" {
		return s
	}
	return s[:1] + strings.ToLower(s[1:])
}

func orGone(s string) string {
	if s == "" {
		return "deleted"
	}
	return s
}
