//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// The chaos soak: a seeded workload across the capabilities with a model of
// what should be, seeded faults injected while it runs, and a checker that
// compares the end state and the history with the model (issue 13).
// SKEIN_SOAK_COMMANDS (default 200) and SKEIN_SOAK_SEED (default: the time)
// set its size and seed; `go tool task soak` runs 1,000.

// soakBed is a cluster the soak runs on: the embedded bus or a NATS cluster.
type soakBed struct {
	name, tag string
	// urls, ca: the bus as the CLI and the observer reach it.
	urls []string
	ca   string
	// servers are the agents' servers, with their Incus projects.
	servers []soakServer
	agents  map[string]*proc
	// busNodes are the bus's processes (skein server, or the NATS nodes);
	// busBack waits until node i serves again after a restart.
	busNodes []*proc
	busBack  func(i int) bool
	// cutter is the agent whose bus connections go through proxies, to be cut.
	cutter  string
	proxies []*cutProxy
	// ep is the Consul endpoint's IP, its container and project.
	ep, epName, epProject string
}

type soakServer struct{ name, project string }

// soakCtr is a container of the soak's pool, on its server.
type soakCtr struct{ name, server string }

// ctrs is the soak's pool of six containers, spread over the bed's servers.
func (b *soakBed) ctrs() []soakCtr {
	var out []soakCtr
	for i := range 6 {
		out = append(out, soakCtr{fmt.Sprintf("sk%d", i+1), b.servers[i%len(b.servers)].name})
	}
	return out
}

func (b *soakBed) project(server string) string {
	for _, s := range b.servers {
		if s.name == server {
			return s.project
		}
	}
	return ""
}

// cli runs the CLI against the bed as the admin, with stdin.
func (b *soakBed) cli(stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	base := []string{"--nats", strings.Join(b.urls, ","), "--creds", adminCreds}
	if b.ca != "" {
		base = append(base, "--tls-ca", b.ca)
	}
	cmd := exec.CommandContext(ctx, skeinBin, append(base, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

func (b *soakBed) must(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := b.cli(stdin, append(args, "--timeout", "120s")...)
	if err != nil {
		t.Fatalf("skein %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// cutProxy forwards TCP to the bus; cut closes every connection and refuses
// new ones for a while, as a network partition of that agent would.
type cutProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	until  time.Time
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			cut := time.Now().Before(p.until)
			p.mu.Unlock()
			if cut {
				c.Close()
				continue
			}
			go p.pipe(c)
		}
	}()
	t.Cleanup(func() { l.Close(); p.cut(0) })
	return p
}

func (p *cutProxy) pipe(c net.Conn) {
	u, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, u)
	p.mu.Unlock()
	go func() { _, _ = copyConn(u, c); u.Close(); c.Close() }()
	_, _ = copyConn(c, u)
	c.Close()
	u.Close()
}

func copyConn(dst, src net.Conn) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if err != nil {
			return n, err
		}
	}
}

// cut drops every connection and refuses new ones for d.
func (p *cutProxy) cut(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.until = time.Now().Add(d)
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) url(scheme string) string { return scheme + "://" + p.l.Addr().String() }

// hostPort is the host:port of a NATS URL.
func hostPort(u string) string {
	_, rest, _ := strings.Cut(u, "://")
	return rest
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

const (
	soakWS, soakDB, soakUser, soakJob = "soakws", "soakdb", "soaku", "soakjob"
	soakPassword                      = "Soak-pw-4Kx-91"
)

// soakModel is what should be, from the commands that succeeded.
type soakModel struct {
	ctrs     map[string]string          // container → Running, Stopped (absent when missing)
	services map[string]map[string]bool // container → services
	checks   map[string]bool            // containers with the check "up"
	backends map[string]map[string]bool // lb → backends
	apps     map[string]bool
	dbs      map[string]bool
	jobCount int
}

// soakCmd is one command of the workload and what became of it.
type soakCmd struct {
	n      int
	id     string
	kind   string // the verb
	key    string // the resource it holds while it runs
	args   []string
	apply  func(m *soakModel)
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
	bed   *soakBed
	rng   *rand.Rand
	mu    sync.Mutex
	model *soakModel
	busy  map[string]bool
	seed  uint64
	n     int
	only  string
	cmds  []*soakCmd
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
	s.t.Logf("soak[%s]: "+format, append([]any{s.bed.name}, args...)...)
}

// next picks the next command from the seeded generator, on a resource no
// command holds now, and marks it held.
func (s *soak) next() *soakCmd {
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
func (s *soak) pick() *soakCmd {
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
			return &soakCmd{kind: "launch", key: name, args: []string{"launch", "skein-busybox", name, "-s", ct.server},
				apply:  func(m *soakModel) { m.ctrs[name] = "Running" },
				expect: containerEvent(events.TypeContainerStarted, name)}
		case r.IntN(4) == 0:
			return &soakCmd{kind: "delete", key: name, args: []string{"delete", name},
				apply:  func(m *soakModel) { delete(m.ctrs, name); delete(m.services, name); delete(m.checks, name) },
				expect: containerEvent(events.TypeContainerDeleted, name)}
		case st == "Running":
			return &soakCmd{kind: "stop", key: name, args: []string{"stop", name},
				apply:  func(m *soakModel) { m.ctrs[name] = "Stopped" },
				expect: containerEvent(events.TypeContainerStopped, name)}
		default:
			return &soakCmd{kind: "start", key: name, args: []string{"start", name},
				apply:  func(m *soakModel) { m.ctrs[name] = "Running" },
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
				return &soakCmd{kind: "delcheck", key: name, args: []string{"delcheck", name, "up"},
					apply:  func(m *soakModel) { delete(m.checks, name) },
					expect: defsSeen(name, func(d events.Definitions) bool { return len(d.Checks) == 0 })}
			}
			return &soakCmd{kind: "addcheck", key: name, args: []string{"addcheck", name, "up", "tcp", "80", "--interval", "2s", "--timeout", "1s"},
				apply:  func(m *soakModel) { m.checks[name] = true },
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
			return &soakCmd{kind: "delservice", key: name, args: []string{"delservice", name, sv.name},
				apply:  func(m *soakModel) { delete(m.services[name], sv.name) },
				expect: defsSeen(name, func(d events.Definitions) bool { return !has(d) })}
		}
		return &soakCmd{kind: "addservice", key: name, args: []string{"addservice", name, sv.name, strconv.Itoa(sv.port)},
			apply: func(m *soakModel) {
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
			return &soakCmd{kind: "delbackends", key: lb + "/" + be, args: []string{"delbackends", lb, be},
				apply: func(m *soakModel) { delete(m.backends[lb], be) }, expect: told(true)}
		}
		i := 10 + indexOf(soakBackends, be)
		return &soakCmd{kind: "addbackends", key: lb + "/" + be, args: []string{"addbackends", lb, fmt.Sprintf("%s:10.77.9.%d:80", be, i)},
			apply: func(m *soakModel) { m.backends[lb][be] = true }, expect: told(false)}
	case w < 82: // apps
		url := soakApps[r.IntN(len(soakApps))]
		if m.apps[url] {
			return &soakCmd{kind: "delapp", key: url, args: []string{"delapp", soakWS, url},
				apply:  func(m *soakModel) { delete(m.apps, url) },
				expect: appEvent(events.TypeAppRemoved, url)}
		}
		return &soakCmd{kind: "pubapp", key: url, args: []string{"pubapp", soakWS, url, "10.77.9.50:80"},
			apply:  func(m *soakModel) { m.apps[url] = true },
			expect: appEvent(events.TypeAppPublished, url)}
	case w < 94: // databases
		db := soakDBs[r.IntN(len(soakDBs))]
		if m.dbs[db] {
			return &soakCmd{kind: "deldb", key: db, args: []string{"deldb", soakDB, db},
				apply:  func(m *soakModel) { delete(m.dbs, db) },
				expect: dbEvent("database-removed", db)}
		}
		return &soakCmd{kind: "adddb", key: db, args: []string{"adddb", "--on", soakDB, soakUser, db},
			apply:  func(m *soakModel) { m.dbs[db] = true },
			expect: dbEvent("database-added", db)}
	default: // the job
		n := 1 + r.IntN(4)
		if n == m.jobCount {
			n = n%4 + 1
		}
		return &soakCmd{kind: "scalejob", key: soakJob, args: []string{"scalejob", soakJob, strconv.Itoa(n), "--detach"},
			apply: func(m *soakModel) { m.jobCount = n },
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
func (s *soak) run(c *soakCmd) {
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
	case "kill-agent":
		name := b.servers[r.IntN(len(b.servers))].name
		a := b.agents[name]
		a.kill9()
		time.Sleep(time.Duration(2000+r.IntN(2000)) * time.Millisecond)
		a.start()
		return "kill -9 agent " + name + ", restarted"
	case "kill-bus":
		i := r.IntN(len(b.busNodes))
		s.mu.Lock()
		s.busKills = append(s.busKills, time.Now())
		s.mu.Unlock()
		b.busNodes[i].kill9()
		time.Sleep(time.Duration(1000+r.IntN(2000)) * time.Millisecond)
		b.busNodes[i].start()
		if !b.busBack(i) {
			s.t.Errorf("bus node %d did not come back", i)
		}
		return fmt.Sprintf("kill -9 bus node %d (%s), restarted", i, b.busNodes[i].name)
	case "stop-endpoint":
		_, _ = incusCmd("stop", "--force", b.epName, "--project", b.epProject)
		time.Sleep(3 * time.Second)
		_, _ = incusCmd("start", b.epName, "--project", b.epProject)
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
			_, err = incusCmd("stop", "--force", name, "--project", b.project(server))
		} else {
			_, err = incusCmd("delete", "--force", name, "--project", b.project(server))
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
	case "cut-agent":
		for _, p := range b.proxies {
			p.cut(10 * time.Second)
		}
		time.Sleep(10 * time.Second)
		return "agent " + b.cutter + " cut from the bus for 10 s"
	}
	return ""
}

var faultKinds = []string{"kill-agent", "kill-bus", "stop-endpoint", "behind-back", "cut-agent"}

// setUp makes the soak's fixed resources: an endpoint, two load balancers, a
// web server, a database instance and a job.
func (s *soak) setUp(t *testing.T, epIP string) {
	b := s.bed
	ep1, ep2 := b.servers[0].name, b.servers[1%len(b.servers)].name
	if s.only != "backends" {
		// The endpoint's fixed address first: a load balancer made before it
		// may be given that address (CI: "address 10.77.5.70 is already used
		// by container soaklb2").
		b.must(t, "", "addep", ep2, epIP, "-n", b.epName)
	}
	b.must(t, "", "addlb", "haproxy", ep1, "-n", soakLBs[0])
	b.must(t, "", "addlb", "haproxy", ep2, "-n", soakLBs[1])
	if s.only == "backends" {
		return
	}
	b.must(t, "", "addws", b.servers[len(b.servers)-1].name, "-n", soakWS)
	b.must(t, soakPassword+"\n", "adddb", "mysql", ep1, soakUser, "d0", "-n", soakDB, "-p", "-")
	b.must(t, "", "addjob", "skein-busybox", "2", "--name", soakJob)
	s.model.jobCount = 2
}

func (s *soak) tearDown() {
	b := s.bed
	for _, args := range [][]string{{"deljob", soakJob}, {"deldbinstance", soakDB, "--purge"}, {"delws", soakWS}, {"dellb", soakLBs[0]}, {"dellb", soakLBs[1]}, {"delep", b.epName}} {
		_, _, _ = b.cli("", append(args, "--timeout", "120s")...)
	}
	for _, ct := range b.ctrs() {
		_, _, _ = b.cli("", "delete", ct.name)
	}
}

// soakOpts size a soak: n commands from seed; only "backends" narrows the
// workload and the checker to the load balancers' backends, without faults.
type soakOpts struct {
	n    int
	seed uint64
	only string
}

// runSoak runs the workload of n commands, 8 in flight, with faults while it
// runs, then checks; it returns the violations found.
func runSoak(t *testing.T, bed *soakBed, o soakOpts) []string {
	n, seed := o.n, o.seed
	s := &soak{t: t, bed: bed, seed: seed, n: n, only: o.only, rng: rand.New(rand.NewPCG(seed, 1)), busy: map[string]bool{}, faults: map[string]int{},
		model: &soakModel{ctrs: map[string]string{}, services: map[string]map[string]bool{}, checks: map[string]bool{}, backends: map[string]map[string]bool{}, apps: map[string]bool{}, dbs: map[string]bool{}}}
	for _, lb := range soakLBs {
		s.model.backends[lb] = map[string]bool{}
	}
	s.run36 = strconv.FormatInt(time.Now().UnixNano()%(36*36*36*36*36*36), 36)
	s.logf("seed %d, %d commands, 8 in flight %s", seed, n, o.only)
	t.Cleanup(s.tearDown)
	s.tearDown() // what an earlier run may have left
	setUp := time.Now()
	s.setUp(t, bed.ep)
	s.logf("set up in %s", time.Since(setUp).Round(100*time.Millisecond))

	nc, err := nats.Connect(strings.Join(bed.urls, ","), nats.UserCredentials(adminCreds), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond), tlsOpt(bed.ca))
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
			order := append([]string(nil), faultKinds...)
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
	var hist []string
	lost, twice, missed, unexplained, late, retried := 0, 0, 0, 0, 0, 0
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
			lost++
			hist = append(hist, fmt.Sprintf("lost: command %d (%s %s) succeeded and the results stream has no result for it", c.n, c.kind, strings.Join(c.args[1:], " ")))
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
	for _, c := range s.cmds {
		if c.ok && !c.expect(s.obs, c.start) {
			missed++
			hist = append(hist, fmt.Sprintf("missed event: command %d (%s %s) succeeded and the observer saw no change", c.n, c.kind, strings.Join(c.args[1:], " ")))
		}
	}
	ghosts, applied := 0, 0
	for _, v := range state {
		switch {
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
	fmt.Fprintf(&b, "\nsoak on %s, seed %d: %d commands\n", s.bed.name, s.seed, len(s.cmds))
	fmt.Fprintf(&b, "  %-12s %6s %6s\n", "command", "ok", "error")
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %-12s %6d %6d\n", k, byKind[k][0], byKind[k][1])
	}
	fmt.Fprintf(&b, "  faults:")
	for _, k := range faultKinds {
		fmt.Fprintf(&b, " %s %d;", k, s.faults[k])
	}
	fmt.Fprintf(&b, "\n  lost %d, two results %d, applied twice %d, ghosts/stale %d, other state %d, missed events %d, unexplained errors %d\n  sent again under the same id after a CLI failure: %d; of which the CLI failed and the agent's result decided: %d\n",
		lost, twice, applied, ghosts, len(state)-applied-ghosts, missed, unexplained, retried, late)
	if len(state) == 0 {
		fmt.Fprintf(&b, "  converged %s after %s\n", convergence.Round(100*time.Millisecond), after)
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
	_ = os.WriteFile(filepath.Join(logDir, fmt.Sprintf("soak-%s-%d.history", s.bed.tag, s.seed)), []byte(h.String()), 0o644)
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
	nc, err := nats.Connect(strings.Join(b.urls, ","), nats.UserCredentials(adminCreds), tlsOpt(b.ca))
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
	for _, sv := range b.servers {
		o, err := incusCmd("list", "--project", sv.project, "-f", "csv", "-c", "ns")
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
	cl, _ := api.NewClient(&api.Config{Address: b.ep + ":8500", HttpClient: &http.Client{Timeout: 5 * time.Second}})
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
		node, _, err := cl.Catalog().Node(discovery.NodePrefix(ct.server)+name, &api.QueryOptions{AllowStale: true})
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
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		srvs, err := runtimeAPI(lbServer[lb], lb).Servers(qctx, "be")
		qcancel()
		if err != nil {
			out = append(out, fmt.Sprintf("state: haproxy of %s: %v", lb, err))
			continue
		}
		var running []string
		for _, sv := range srvs {
			running = append(running, sv.Name)
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
	site, err := inContainer(soakWS, b.project(wsRec.Server), "cat /etc/nginx/sites-enabled/default")
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
	shown, err := inContainer(soakDB, b.project(dbRec.Server), "mariadb --batch --skip-column-names -e 'SHOW DATABASES'")
	if err != nil {
		out = append(out, "state: databases of "+soakDB+": "+err.Error())
	}
	users, _ := inContainer(soakDB, b.project(dbRec.Server), "mariadb --batch --skip-column-names -e \"SELECT COUNT(DISTINCT user) FROM mysql.user WHERE user='"+soakUser+"'\"")
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

// soakSize is the number of commands and the seed, from the environment.
func soakSize() (int, uint64) {
	n, seed := 200, uint64(time.Now().UnixNano()%1_000_000)
	if v, err := strconv.Atoi(os.Getenv("SKEIN_SOAK_COMMANDS")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.ParseUint(os.Getenv("SKEIN_SOAK_SEED"), 10, 64); err == nil {
		seed = v
	}
	return n, seed
}

// The soak on the embedded bus (skein server): its faults kill the server
// itself. Agent s3 reaches the bus through a proxy that can cut it.
func TestSoak(t *testing.T) {
	dumpOnFailure(t)
	n, seed := soakSize()
	p := newCutProxy(t, hostPort(natsURL))
	orig := agents["s3"]
	orig.stop()
	args := append([]string(nil), orig.args...)
	for i := range args {
		if args[i] == "--nats" {
			args[i+1] = p.url("nats")
		}
	}
	cut := startProc("agent-s3-proxied", args...)
	agents["s3"] = cut
	t.Cleanup(func() {
		cut.stop()
		agents["s3"] = orig
		orig.start()
		allUp(30 * time.Second)
	})
	if !allUp(30 * time.Second) {
		t.Fatal("agent s3 does not come up through the proxy")
	}
	bed := embeddedBed()
	bed.cutter, bed.proxies = "s3", []*cutProxy{p}
	if v := runSoak(t, bed, soakOpts{n: n, seed: seed}); len(v) > 0 {
		for _, x := range v {
			t.Error(x)
		}
	}
}

// embeddedBed is the shared cluster: skein server's embedded bus, agents s1-s3.
func embeddedBed() *soakBed {
	port := portOf(natsURL)
	bed := &soakBed{name: "embedded skein server", tag: "embedded", urls: []string{natsURL}, agents: agents, busNodes: []*proc{server},
		busBack: func(int) bool { return waitPort(port, 30*time.Second) && allUp(30*time.Second) },
		ep:      "10.77.2.37", epName: "soakep", epProject: "skein-s2"}
	for _, s := range servers {
		bed.servers = append(bed.servers, soakServer{s.name, s.project})
	}
	return bed
}

// The checker catches a lost update. Agents s1 and s2 (the load balancers'
// servers) are replaced by a broken build (go build -tags skeinbroken) with
// the per-resource lock off, then with the store's revision check off too;
// each time 40 backend commands run, 8 at once, on two load balancers. With
// the lock off the revision check alone keeps every update in the record
// (the conflicts are retried), though haproxy may run an older one; with
// both off the checker names the backends lost.
func TestSoakCatchesLostUpdate(t *testing.T) {
	dumpOnFailure(t)
	broken := filepath.Join(t.TempDir(), "skein-broken")
	if out, err := exec.Command("go", "build", "-tags", "skeinbroken", "-o", broken, "../../cmd/skein").CombinedOutput(); err != nil {
		t.Fatalf("building the broken skein: %v\n%s", err, out)
	}
	orig := map[string]*proc{"s1": agents["s1"], "s2": agents["s2"]}
	var running []*proc
	swap := func(mode string) {
		for name, o := range orig {
			agents[name].stop()
			p := &proc{name: "agent-" + name + "-broken", args: o.args, bin: broken, env: []string{"SKEIN_BROKEN=" + mode}}
			p.start()
			agents[name] = p
			running = append(running, p)
		}
		if !allUp(30 * time.Second) {
			t.Fatalf("the broken agents (%s) do not come up", mode)
		}
	}
	t.Cleanup(func() {
		for _, p := range running {
			p.stop()
		}
		for name, o := range orig {
			agents[name] = o
			o.start()
		}
		allUp(30 * time.Second)
	})
	bed := embeddedBed()

	swap("nolock")
	v := runSoak(t, bed, soakOpts{n: 40, seed: 11, only: "backends"})
	// Concurrent writes of one record conflict and are retried: none is lost.
	// What haproxy runs may still differ: two applies of one load balancer
	// can land out of order, which only the lock prevents (seen in CI:
	// "haproxy of soaklb1 runs [b1 b3 b4 b5], the model [b1 b2 b3 b4 b5]").
	t.Logf("lock off, revision check on: %d violations %q", len(v), v)
	for _, x := range v {
		if !strings.HasPrefix(x, "state: haproxy of ") {
			t.Errorf("lock off, revision check on: %q (want none but haproxy's state)", x)
		}
	}

	swap("nolock,norevision")
	v = runSoak(t, bed, soakOpts{n: 40, seed: 11, only: "backends"})
	t.Logf("lock and revision check off: %d violations %q", len(v), v)
	named := false
	for _, x := range v {
		named = named || strings.HasPrefix(x, "lost update: backends of soaklb")
	}
	if !named {
		t.Errorf("the checker did not name a lost update of a load balancer's backends: %q", v)
	}
}

// The soak on a three-node NATS cluster (TLS, skein's authority, skein init
// --replicas 3), with two agents (c1, c2: the test bed's fourth and fifth
// servers) and a scheduler; its faults kill one NATS node at a time. Agent
// c2 reaches the nodes through proxies that can cut it.
func TestSoakNATSCluster(t *testing.T) {
	dumpOnFailure(t)
	n, seed := soakSize()
	c := newNATSCluster(t)
	credDir := t.TempDir()
	bed := &soakBed{name: "three-node NATS cluster", tag: "cluster", urls: c.urls, ca: c.ca, agents: map[string]*proc{}, busNodes: c.nodes,
		busBack: func(i int) bool {
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				if c.healthy(i) {
					return true
				}
				time.Sleep(200 * time.Millisecond)
			}
			return false
		},
		cutter: "c2", ep: "10.77.5.37", epName: "soakep", epProject: "skein-s5"}
	var proxied []string
	for _, u := range c.urls {
		p := newCutProxy(t, hostPort(u))
		bed.proxies = append(bed.proxies, p)
		proxied = append(proxied, p.url("tls"))
	}
	for i, name := range []string{"c1", "c2"} {
		if out, err := exec.Command(skeinBin, "creds", "agent", name, "--data", dataDir, "-o", credDir).CombinedOutput(); err != nil {
			t.Fatalf("creds agent %s: %v %s", name, err, out)
		}
		// No skein server follows the authority on a NATS of one's own: init makes the agent's consumer and store.
		c.must(t, "init", "--replicas", "3", "--data", dataDir)
		urls := c.urls
		if name == bed.cutter {
			urls = proxied
		}
		a := startProc("soak-agent-"+name, "agent", "--name", name, "--nats", strings.Join(urls, ","), "--tls-ca", c.ca,
			"--creds", filepath.Join(credDir, "agent-"+name+".creds"), "--network", fmt.Sprintf("skeinbr%d", 4+i), "--incus-project", fmt.Sprintf("skein-s%d", 4+i),
			"--pool", "skein", "--state", filepath.Join(credDir, "state-"+name), "--log-level", "debug")
		bed.agents[name] = a
		bed.servers = append(bed.servers, soakServer{name, fmt.Sprintf("skein-s%d", 4+i)})
	}
	sched := startProc("soak-scheduler", "scheduler", "--nats", strings.Join(c.urls, ","), "--tls-ca", c.ca, "--creds", schedulerCreds, "--id", "soak-sched")
	t.Cleanup(func() {
		// After the soak's own clean-up (registered later, run first).
		sched.stop()
		for _, a := range bed.agents {
			a.stop()
		}
	})
	eventually(t, 30*time.Second, func() bool {
		out, err := c.skein("servers", "-o", "json")
		return err == nil && strings.Count(out, `"status": "up"`) == 2
	}, "the agents are not up on the cluster")
	if v := runSoak(t, bed, soakOpts{n: n, seed: seed}); len(v) > 0 {
		for _, x := range v {
			t.Error(x)
		}
	}
}
