package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/events"
)

// fakeRecords are fixed records for the cluster collector.
type fakeRecords struct {
	hbs    []events.Heartbeat
	ctrs   []events.Container
	lbs    []events.LB
	health []events.Health
	vips   []events.VIP
	jobs   []events.Job
	fail   bool
}

func (f *fakeRecords) Heartbeats(context.Context) ([]events.Heartbeat, error) {
	if f.fail {
		return nil, errors.New("bus away")
	}
	return f.hbs, nil
}
func (f *fakeRecords) Containers(context.Context) ([]events.Container, error) { return f.ctrs, nil }
func (f *fakeRecords) LBs(context.Context) ([]events.LB, error)               { return f.lbs, nil }
func (f *fakeRecords) Health(context.Context) ([]events.Health, error)        { return f.health, nil }
func (f *fakeRecords) VIPs(context.Context) ([]events.VIP, error)             { return f.vips, nil }
func (f *fakeRecords) Jobs(context.Context) ([]events.Job, error)             { return f.jobs, nil }

// TestClusterGauges: the cluster's gauges, read from the records: a server
// up and one whose heartbeat is old, containers by status, backends, checks
// by status, the VIP's holder, a job's instances by health.
func TestClusterGauges(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	rec := &fakeRecords{
		hbs: []events.Heartbeat{
			{Name: "s1", Status: "up", Time: now.Add(-2 * time.Second), Load1: 0.5, MemAvailable: 1 << 30},
			{Name: "s2", Status: "up", Time: now.Add(-30 * time.Second)},
		},
		ctrs: []events.Container{
			{Name: "web-1", Server: "s1", Status: "Running", Job: "web"},
			{Name: "web-2", Server: "s1", Status: "Running", Job: "web"},
			{Name: "web-3", Server: "s2", Status: "Stopped", Job: "web"},
			{Name: "db", Server: "s2", Status: "Running"},
		},
		lbs:    []events.LB{{Resource: events.Resource{Name: "lb1", Server: "s1"}, Backends: []events.Backend{{Name: "a"}, {Name: "b"}}}},
		health: []events.Health{{Container: "web-1", Server: "s1", Passing: true, Checks: map[string]string{"up": "passing"}}, {Container: "web-2", Server: "s1", Checks: map[string]string{"up": "critical"}}},
		vips:   []events.VIP{{VIPAdd: events.VIPAdd{Name: "vip1"}, Server: "s1", Holder: true}, {VIPAdd: events.VIPAdd{Name: "vip1"}, Server: "s2"}},
		jobs:   []events.Job{{JobAdd: events.JobAdd{Name: "web", Count: 3, Service: "web"}}},
	}
	c := NewCluster(rec)
	c.now = func() time.Time { return now }
	want := `
# HELP skein_containers Containers by server and status (Running, Stopped, ...).
# TYPE skein_containers gauge
skein_containers{server="s1",status="Running"} 2
skein_containers{server="s2",status="Running"} 1
skein_containers{server="s2",status="Stopped"} 1
# HELP skein_server_up 1 when the server's agent is up (a heartbeat under 7 s old), else 0.
# TYPE skein_server_up gauge
skein_server_up{server="s1"} 1
skein_server_up{server="s2"} 0
# HELP skein_lb_backends Backends configured on each load balancer.
# TYPE skein_lb_backends gauge
skein_lb_backends{lb="lb1",server="s1"} 2
# HELP skein_checks Health checks of published containers, by server and status (passing, warning, critical).
# TYPE skein_checks gauge
skein_checks{server="s1",status="critical"} 1
skein_checks{server="s1",status="passing"} 1
# HELP skein_vip_holder 1 on the server that holds the floating IP, 0 on the other.
# TYPE skein_vip_holder gauge
skein_vip_holder{server="s1",vip="vip1"} 1
skein_vip_holder{server="s2",vip="vip1"} 0
# HELP skein_job_instances Instances of each job by health: passing (running, its checks pass), failing, running (a job without a service), stopped or another status.
# TYPE skein_job_instances gauge
skein_job_instances{health="failing",job_name="web"} 1
skein_job_instances{health="passing",job_name="web"} 1
skein_job_instances{health="stopped",job_name="web"} 1
# HELP skein_records_read_errors Record kinds this scrape could not read (their gauges are missing from it).
# TYPE skein_records_read_errors gauge
skein_records_read_errors 0
`
	names := []string{"skein_containers", "skein_server_up", "skein_lb_backends", "skein_checks", "skein_vip_holder", "skein_job_instances", "skein_records_read_errors"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// A kind that cannot be read is left out and counted, not guessed.
	rec.fail = true
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP skein_records_read_errors Record kinds this scrape could not read (their gauges are missing from it).
# TYPE skein_records_read_errors gauge
skein_records_read_errors 1
`), "skein_records_read_errors", "skein_server_up"); err != nil {
		t.Error(err)
	}
}

// TestCommandsCounted: answered commands by type and outcome, with their latencies.
func TestCommandsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewCommands(reg, "s1")
	c.Done("container.launch", "ok", 20*time.Millisecond, 300*time.Millisecond)
	c.Done("container.launch", "ok", 10*time.Millisecond, 200*time.Millisecond)
	c.Done("container.launch", "conflict", 0, time.Millisecond)
	c.Redelivered("container.launch")
	c.DeadlineHit("container.stop")
	if got := testutil.ToFloat64(c.total.WithLabelValues("container.launch", "ok")); got != 2 {
		t.Errorf("ok launches = %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.total.WithLabelValues("container.launch", "conflict")); got != 1 {
		t.Errorf("refused launches = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(c.handler); n != 1 {
		t.Errorf("%d handler histograms, want 1 (one type)", n)
	}
	if got := testutil.ToFloat64(c.redelivered.WithLabelValues("container.launch")) + testutil.ToFloat64(c.deadline.WithLabelValues("container.stop")); got != 2 {
		t.Errorf("redeliveries + deadline hits = %v, want 2", got)
	}
}

// TestServe: /metrics in the Prometheus text format; any other path a plain
// 404; an address in use refused at start.
func TestServe(t *testing.T) {
	reg := NewRegistry()
	NewEvents(reg, "agent/s1").Published("container.started")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := Serve(ctx, addr, reg, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `skein_events_published_total{source="agent/s1",type="container.started"} 1`) {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, body := get("/nope"); code != 404 || strings.Contains(body, "goroutine") {
		t.Errorf("/nope: %d %q", code, body)
	}
	if err := Serve(ctx, addr, reg, zerolog.Nop()); err == nil {
		t.Error("a second server on the same address started")
	}
}
