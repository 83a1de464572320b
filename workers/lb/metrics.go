package lb

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skeinhq/skein/events"
)

var descBackendState = prometheus.NewDesc("skein_lb_backend_state",
	"1 for each backend of this server's haproxy load balancers, labelled with its state as haproxy runs it (up, down, starting, stopping, maint, drain).",
	[]string{"server", "lb", "backend", "state"}, nil)

var descRuntimeErrors = prometheus.NewDesc("skein_lb_runtime_errors",
	"haproxy load balancers of this server whose runtime API did not answer this scrape.", []string{"server"}, nil)

// backendStates is a collector of the backends' states, asked of each
// haproxy's runtime API at each scrape (nginx has no such API).
type backendStates struct{ w *Worker }

// Describe sends the collector's descriptions.
func (b backendStates) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBackendState
	ch <- descRuntimeErrors
}

// Collect asks each ready haproxy of this server for its backends.
func (b backendStates) Collect(ch chan<- prometheus.Metric) {
	w := b.w
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	lbs, err := w.kind.Store.ListServer(ctx, w.host.Server)
	failed := 0
	if err != nil {
		failed++
	}
	for _, e := range lbs {
		lb := e.Value
		if lb.Kind != "haproxy" || lb.Status != events.StatusReady {
			continue
		}
		srvs, err := w.cfg.API(w.socketPath(lb.Name)).Servers(ctx, "be")
		if err != nil {
			failed++
			continue
		}
		for _, s := range srvs {
			ch <- prometheus.MustNewConstMetric(descBackendState, prometheus.GaugeValue, 1, w.host.Server, lb.Name, s.Name, s.State)
		}
	}
	ch <- prometheus.MustNewConstMetric(descRuntimeErrors, prometheus.GaugeValue, float64(failed), w.host.Server)
}
