// Package metrics is skein's Prometheus metrics: what a process counts as it
// works (commands, redeliveries, deadline hits, events published) and, on the
// server, the cluster's state read from the records at each scrape. Served
// on /metrics by every skein process started with --metrics ADDR.
package metrics

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/internal/httpd"
)

// latencyBuckets span a fast query (a millisecond) to a slow image pull (minutes).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Commands counts the commands a process handles, by type and outcome.
type Commands struct {
	total       *prometheus.CounterVec
	queue       *prometheus.HistogramVec
	handler     *prometheus.HistogramVec
	redelivered *prometheus.CounterVec
	deadline    *prometheus.CounterVec
}

// NewCommands registers the command metrics of the process serving server's commands.
func NewCommands(reg prometheus.Registerer, server string) *Commands {
	l := prometheus.Labels{"server": server}
	c := &Commands{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skein_commands_total", ConstLabels: l,
			Help: "Commands answered, by type and outcome (ok, or the error's code: invalid, not_found, conflict, unavailable, timeout, internal)."}, []string{"type", "outcome"}),
		queue: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "skein_command_queue_seconds", ConstLabels: l, Buckets: latencyBuckets,
			Help: "From the command's creation (the CLI's clock) to its handler starting: time spent on the bus, in the queue and waiting for its resource's lock."}, []string{"type"}),
		handler: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "skein_command_handler_seconds", ConstLabels: l, Buckets: latencyBuckets,
			Help: "Time in the command's handler, per attempt."}, []string{"type"}),
		redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skein_command_redeliveries_total", ConstLabels: l,
			Help: "Commands delivered again (after a transient failure, a crash or a lost ack), by type."}, []string{"type"}),
		deadline: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skein_command_deadline_hits_total", ConstLabels: l,
			Help: "Handlers that passed their deadline and were answered with a timeout, by type."}, []string{"type"}),
	}
	reg.MustRegister(c.total, c.queue, c.handler, c.redelivered, c.deadline)
	return c
}

// Done counts one answered attempt: outcome is ok or the error's code.
func (c *Commands) Done(typ, outcome string, queued, handled time.Duration) {
	c.total.WithLabelValues(typ, outcome).Inc()
	if queued >= 0 {
		c.queue.WithLabelValues(typ).Observe(queued.Seconds())
	}
	c.handler.WithLabelValues(typ).Observe(handled.Seconds())
}

// Redelivered counts a command delivered again.
func (c *Commands) Redelivered(typ string) { c.redelivered.WithLabelValues(typ).Inc() }

// DeadlineHit counts a handler answered with a timeout.
func (c *Commands) DeadlineHit(typ string) { c.deadline.WithLabelValues(typ).Inc() }

// Events counts the events a process publishes.
type Events struct {
	published *prometheus.CounterVec
}

// NewEvents registers the events counter.
func NewEvents(reg prometheus.Registerer, source string) *Events {
	e := &Events{published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skein_events_published_total",
		ConstLabels: prometheus.Labels{"source": source}, Help: "Events published on the events stream, by type."}, []string{"type"})}
	reg.MustRegister(e.published)
	return e
}

// Published counts one event.
func (e *Events) Published(typ string) { e.published.WithLabelValues(typ).Inc() }

// NewRegistry is a registry with the Go runtime's and the process's collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Serve serves reg on http://addr/metrics until ctx ends; any other path is
// a plain 404. The listener is bound before Serve returns, so a bad address
// is an error at start.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, log zerolog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: promLog{log}}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found: skein serves /metrics here", http.StatusNotFound)
	})
	httpd.Serve(ctx, l, mux, log, "metrics server")
	log.Info().Str("addr", l.Addr().String()).Msg("metrics on /metrics")
	return nil
}

type promLog struct{ log zerolog.Logger }

func (p promLog) Println(v ...any) { p.log.Warn().Msgf("metrics: %v", v) }
