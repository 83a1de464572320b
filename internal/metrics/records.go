package metrics

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// BusRecords reads the cluster gauges' records from the bus's buckets.
type BusRecords struct {
	hbs    *bus.Store[events.Heartbeat]
	ctrs   *bus.Store[events.Container]
	lbs    *bus.Store[events.LB]
	health *bus.Store[events.Health]
	vips   *bus.Store[events.VIP]
	jobs   *bus.Store[events.Job]
}

var _ Records = (*BusRecords)(nil)

// OpenRecords opens the buckets.
func OpenRecords(ctx context.Context, js jetstream.JetStream) (*BusRecords, error) {
	r := &BusRecords{}
	var err error
	if r.hbs, err = bus.OpenStore[events.Heartbeat](ctx, js); err != nil {
		return nil, err
	}
	if r.ctrs, err = bus.OpenStore[events.Container](ctx, js); err != nil {
		return nil, err
	}
	if r.lbs, err = bus.OpenStore[events.LB](ctx, js); err != nil {
		return nil, err
	}
	if r.health, err = bus.OpenStore[events.Health](ctx, js); err != nil {
		return nil, err
	}
	if r.vips, err = bus.OpenStore[events.VIP](ctx, js); err != nil {
		return nil, err
	}
	if r.jobs, err = bus.OpenStore[events.Job](ctx, js); err != nil {
		return nil, err
	}
	return r, nil
}

// Heartbeats are the servers' last heartbeats.
func (r *BusRecords) Heartbeats(ctx context.Context) ([]events.Heartbeat, error) {
	return r.hbs.Values(ctx)
}

// Containers are the containers' records.
func (r *BusRecords) Containers(ctx context.Context) ([]events.Container, error) {
	return r.ctrs.Values(ctx)
}

// LBs are the load balancers' records.
func (r *BusRecords) LBs(ctx context.Context) ([]events.LB, error) { return r.lbs.Values(ctx) }

// Health are the published containers' health records.
func (r *BusRecords) Health(ctx context.Context) ([]events.Health, error) {
	return r.health.Values(ctx)
}

// VIPs are the floating IPs' sides.
func (r *BusRecords) VIPs(ctx context.Context) ([]events.VIP, error) { return r.vips.Values(ctx) }

// Jobs are the jobs.
func (r *BusRecords) Jobs(ctx context.Context) ([]events.Job, error) { return r.jobs.Values(ctx) }
