package containers

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/workers"
)

// reconcileEvery bounds how stale records can get if a lifecycle event is missed.
const reconcileEvery = 10 * time.Second

// staleReservation is how long a launch may hold a name before reconciliation frees it.
const staleReservation = 10 * time.Minute

// lifecycleEvent maps an Incus lifecycle action to the skein event it becomes.
var lifecycleEvent = map[string]string{
	"instance-created":   events.TypeContainerCreated,
	"instance-started":   events.TypeContainerStarted,
	"instance-stopped":   events.TypeContainerStopped,
	"instance-shutdown":  events.TypeContainerStopped,
	"instance-restarted": events.TypeContainerRestarted,
	"instance-deleted":   events.TypeContainerDeleted,
}

// statusEvent is the event that a change to a status announces.
func statusEvent(status string) string {
	switch status {
	case "Running":
		return events.TypeContainerStarted
	case "Stopped":
		return events.TypeContainerStopped
	case "Deleted":
		return events.TypeContainerDeleted
	}
	return ""
}

// Run follows the runtime's lifecycle events and reconciles records until ctx ends.
// After every (re)connection it reconciles first, so changes made while the agent
// was down are caught up and announced.
func (w *Worker) Run(ctx context.Context) {
	retry := time.Second
	for ctx.Err() == nil {
		ch, err := w.rt.Watch(ctx)
		if err != nil {
			w.log.Warn().Err(err).Dur("retry_in", retry).Msg("lifecycle stream unavailable")
			sleep(ctx, retry)
			retry = min(retry*2, 15*time.Second)
			continue
		}
		retry = time.Second
		if err := w.Reconcile(ctx); err != nil {
			w.log.Warn().Err(err).Msg("reconcile")
		}
		w.follow(ctx, ch)
	}
}

func (w *Worker) follow(ctx context.Context, ch <-chan container.Event) {
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				w.log.Warn().Msg("lifecycle stream closed; reconnecting")
				return
			}
			typ, known := lifecycleEvent[ev.Action]
			if !known {
				continue
			}
			c, err := w.syncOne(ctx, ev.Name, typ, ev.Action)
			if err != nil {
				w.log.Warn().Err(err).Str("container", ev.Name).Msg("sync after lifecycle event")
				continue
			}
			if typ == events.TypeContainerStarted && c.IPv4 == "" {
				go w.awaitAddress(ctx, ev.Name)
			}
		case <-tick.C:
			if err := w.Reconcile(ctx); err != nil {
				w.log.Warn().Err(err).Msg("reconcile")
			}
		}
	}
}

// awaitAddress records a started container's address as soon as DHCP gives it one.
func (w *Worker) awaitAddress(ctx context.Context, name string) {
	deadline := time.Now().Add(addressWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		sleep(ctx, 200*time.Millisecond)
		c, err := w.syncOne(ctx, name, "", "")
		if err != nil || c.IPv4 != "" || c.Status != "Running" {
			return
		}
	}
}

// syncOne brings one container's record up to date and publishes what changed.
// typ and action name the lifecycle event that prompted it, if any.
func (w *Worker) syncOne(ctx context.Context, name, typ, action string) (events.Container, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	inst, err := w.rt.Get(ctx, name)
	if err != nil && !errors.Is(err, container.ErrNotFound) {
		return events.Container{}, workers.Transient("reading container %s: %v", name, err)
	}
	old, err := w.record(ctx, name)
	if err != nil {
		return events.Container{}, err
	}
	return w.apply(ctx, name, inst, old, typ, action)
}

// Reconcile compares every container of the server with its record, fixes the
// records and announces the differences.
func (w *Worker) Reconcile(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	list, err := w.rt.List(ctx)
	if err != nil {
		return err
	}
	recs, err := w.records(ctx)
	if err != nil {
		return err
	}
	for i := range list {
		inst := list[i]
		if _, err := w.apply(ctx, inst.Name, &inst, recs[inst.Name], "", ""); err != nil {
			w.log.Warn().Err(err).Str("container", inst.Name).Msg("reconcile")
		}
		delete(recs, inst.Name)
	}
	for name, rec := range recs {
		if rec.Server != w.server {
			continue
		}
		if rec.Status == StatusCreating && time.Since(rec.Updated) < staleReservation {
			continue
		}
		if _, err := w.apply(ctx, name, nil, rec, "", ""); err != nil {
			w.log.Warn().Err(err).Str("container", name).Msg("reconcile")
		}
	}
	return nil
}

// apply writes the record that inst (nil: gone) implies and publishes events.
// Lifecycle events are announced as they come; other changes are announced once,
// as the status they lead to, unless that status was already announced.
func (w *Worker) apply(ctx context.Context, name string, inst *container.Instance, old *events.Container, typ, action string) (events.Container, error) {
	if old != nil && old.Server != w.server {
		// The name belongs to another server: a duplicate made behind skein's back.
		w.log.Warn().Str("container", name).Str("owner", old.Server).Msg("container name already used by another server; not recorded")
		return *old, nil
	}
	now := time.Now().UTC()
	var rec events.Container
	if inst == nil {
		if old != nil && old.Status == StatusCreating && typ == "" && time.Since(old.Updated) < staleReservation {
			return *old, nil
		}
		rec = events.Container{Name: name, Server: w.server, Status: "Deleted", Updated: now}
		if old != nil {
			if err := w.kv.Delete(ctx, name); err != nil {
				return rec, workers.Transient("forgetting %s: %v", name, err)
			}
			rec.Image, rec.Command = old.Image, old.Command
		} else if typ == "" {
			return rec, nil
		}
	} else {
		rec = events.Container{Name: name, Server: w.server, Status: inst.Status, IPv4: inst.IPv4, Image: inst.Image, Command: inst.Command, Updated: now}
		if old == nil || old.Status != rec.Status || old.IPv4 != rec.IPv4 || old.Image != rec.Image {
			b, _ := json.Marshal(rec)
			if _, err := w.kv.Put(ctx, name, b); err != nil {
				return rec, workers.Transient("recording %s: %v", name, err)
			}
		} else {
			rec.Updated = old.Updated
		}
	}
	w.announce(ctx, rec, old, typ, action)
	return rec, nil
}

func (w *Worker) announce(ctx context.Context, rec events.Container, old *events.Container, typ, action string) {
	cause := "incus"
	if typ == "" {
		cause = "reconcile"
		if old == nil {
			w.publish(ctx, events.TypeContainerCreated, rec, cause, action)
		}
		if old == nil || old.Status != rec.Status {
			typ = statusEvent(rec.Status)
		}
		if typ == "" && old != nil && old.IPv4 != rec.IPv4 {
			typ = events.TypeContainerUpdated
		}
		if typ == "" {
			return
		}
	}
	if statusEvent(statusOf(typ)) == typ {
		// A status is told once, whether a lifecycle event or a reconcile saw it first.
		if w.last[rec.Name] == typ {
			if old == nil || old.IPv4 == rec.IPv4 {
				return
			}
			typ = events.TypeContainerUpdated
		} else {
			w.last[rec.Name] = typ
		}
	}
	if typ == events.TypeContainerDeleted {
		delete(w.last, rec.Name)
	}
	w.publish(ctx, typ, rec, cause, action)
}

// statusOf is the status a status event announces.
func statusOf(typ string) string {
	switch typ {
	case events.TypeContainerStarted:
		return "Running"
	case events.TypeContainerStopped:
		return "Stopped"
	case events.TypeContainerDeleted:
		return "Deleted"
	}
	return ""
}

func (w *Worker) publish(ctx context.Context, typ string, rec events.Container, cause, action string) {
	ev := events.ContainerEvent{Name: rec.Name, Status: rec.Status, IPv4: rec.IPv4, Cause: cause, Action: action}
	if err := w.pub.Publish(ctx, typ, ev); err != nil {
		w.log.Warn().Err(err).Str("type", typ).Str("container", rec.Name).Msg("publishing event")
	}
}

// records returns every container record, by name.
func (w *Worker) records(ctx context.Context) (map[string]*events.Container, error) {
	out := map[string]*events.Container{}
	lister, err := w.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return out, nil
		}
		return nil, err
	}
	for k := range lister.Keys() {
		rec, err := w.record(ctx, k)
		if err == nil && rec != nil {
			out[k] = rec
		}
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
