package metrics

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skeinhq/skein/events"
)

// Records reads the cluster's records for the cluster gauges.
type Records interface {
	Heartbeats(ctx context.Context) ([]events.Heartbeat, error)
	Containers(ctx context.Context) ([]events.Container, error)
	LBs(ctx context.Context) ([]events.LB, error)
	Health(ctx context.Context) ([]events.Health, error)
	VIPs(ctx context.Context) ([]events.VIP, error)
	Jobs(ctx context.Context) ([]events.Job, error)
}

// downAfter is how old a heartbeat may be before its server counts as down
// (three missed beats, as the agents and the scheduler count).
const downAfter = 7 * time.Second

var (
	descUp         = prometheus.NewDesc("skein_server_up", "1 when the server's agent is up (a heartbeat under 7 s old), else 0.", []string{"server"}, nil)
	descHBAge      = prometheus.NewDesc("skein_server_heartbeat_age_seconds", "Age of the server's last heartbeat.", []string{"server"}, nil)
	descLoad       = prometheus.NewDesc("skein_server_load1", "The server's one-minute load average, from its heartbeat.", []string{"server"}, nil)
	descMemAvail   = prometheus.NewDesc("skein_server_memory_available_bytes", "The server's available memory, from its heartbeat.", []string{"server"}, nil)
	descContainers = prometheus.NewDesc("skein_containers", "Containers by server and status (Running, Stopped, ...).", []string{"server", "status"}, nil)
	descBackends   = prometheus.NewDesc("skein_lb_backends", "Backends configured on each load balancer.", []string{"lb", "server"}, nil)
	descChecks     = prometheus.NewDesc("skein_checks", "Health checks of published containers, by server and status (passing, warning, critical).", []string{"server", "status"}, nil)
	descVIPHolder  = prometheus.NewDesc("skein_vip_holder", "1 on the server that holds the floating IP, 0 on the other.", []string{"vip", "server"}, nil)
	// Jobs are labelled job_name: "job" is Prometheus's own target label.
	descJobInst    = prometheus.NewDesc("skein_job_instances", "Instances of each job by health: passing (running, its checks pass), failing, running (a job without a service), stopped or another status.", []string{"job_name", "health"}, nil)
	descJobCount   = prometheus.NewDesc("skein_job_count", "How many instances each job asks for.", []string{"job_name"}, nil)
	descReadErrors = prometheus.NewDesc("skein_records_read_errors", "Record kinds this scrape could not read (their gauges are missing from it).", nil, nil)
)

// Cluster is a collector of the cluster's state, read from the records at
// each scrape (a few small buckets: no state of its own to go stale).
type Cluster struct {
	rec Records
	now func() time.Time
}

// NewCluster returns the cluster collector over rec.
func NewCluster(rec Records) *Cluster { return &Cluster{rec: rec, now: time.Now} }

// Describe sends the descriptions of every cluster gauge.
func (c *Cluster) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descHBAge, descLoad, descMemAvail, descContainers, descBackends, descChecks, descVIPHolder, descJobInst, descJobCount, descReadErrors} {
		ch <- d
	}
}

// Collect reads the records and sends the gauges.
func (c *Cluster) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	now := c.now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	failed := 0
	if hbs, err := c.rec.Heartbeats(ctx); err != nil {
		failed++
	} else {
		for _, hb := range hbs {
			age := now.Sub(hb.Time)
			up := 0.0
			if hb.Status == "up" && age < downAfter {
				up = 1
			}
			gauge(descUp, up, hb.Name)
			gauge(descHBAge, age.Seconds(), hb.Name)
			gauge(descLoad, hb.Load1, hb.Name)
			gauge(descMemAvail, float64(hb.MemAvailable), hb.Name)
		}
	}
	ctrs, cerr := c.rec.Containers(ctx)
	if cerr != nil {
		failed++
	} else {
		type key struct{ server, status string }
		n := map[key]int{}
		for _, ct := range ctrs {
			n[key{ct.Server, ct.Status}]++
		}
		for k, v := range n {
			gauge(descContainers, float64(v), k.server, k.status)
		}
	}
	if lbs, err := c.rec.LBs(ctx); err != nil {
		failed++
	} else {
		for _, lb := range lbs {
			gauge(descBackends, float64(len(lb.Backends)), lb.Name, lb.Server)
		}
	}
	health, herr := c.rec.Health(ctx)
	if herr != nil {
		failed++
	} else {
		type key struct{ server, status string }
		n := map[key]int{}
		for _, h := range health {
			for _, st := range h.Checks {
				n[key{h.Server, st}]++
			}
		}
		for k, v := range n {
			gauge(descChecks, float64(v), k.server, k.status)
		}
	}
	if vips, err := c.rec.VIPs(ctx); err != nil {
		failed++
	} else {
		for _, v := range vips {
			held := 0.0
			if v.Holder {
				held = 1
			}
			gauge(descVIPHolder, held, v.Name, v.Server)
		}
	}
	if jobs, err := c.rec.Jobs(ctx); err != nil {
		failed++
	} else if cerr == nil && herr == nil {
		passing := map[string]bool{} // a container with health has a key
		for _, h := range health {
			passing[h.Container] = h.Passing
		}
		for _, j := range jobs {
			gauge(descJobCount, float64(j.Count), j.Name)
			n := map[string]int{}
			for _, ct := range ctrs {
				if ct.Job == j.Name {
					p, checked := passing[ct.Name]
					n[instanceHealth(j, ct, checked, p)]++
				}
			}
			for h, v := range n {
				gauge(descJobInst, float64(v), j.Name, h)
			}
		}
	}
	gauge(descReadErrors, float64(failed))
}

// instanceHealth is one instance's health as skein_job_instances counts it.
func instanceHealth(j events.Job, ct events.Container, checked, passing bool) string {
	switch {
	case ct.Status != "Running":
		return strings.ToLower(ct.Status)
	case j.Service == "":
		return "running"
	case checked && passing:
		return "passing"
	default:
		return "failing"
	}
}
