package containers

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
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

// told is what the worker last announced about one container.
type told struct {
	// status is the last status event told: started, stopped, or "" after created.
	status string
	// ipv4 is the address last told.
	ipv4 string
}

// Run follows the runtime's lifecycle events and reconciles records until ctx ends.
// After every (re)connection it reconciles first, so changes made while the
// stream was down, or the agent was, are caught up and announced.
func (w *Worker) Run(ctx context.Context) {
	w.loadTold(ctx)
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

// loadTold starts from the records: what they say was announced before this process.
func (w *Worker) loadTold(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	recs, err := w.records(ctx)
	if err != nil {
		w.log.Warn().Err(err).Msg("reading records")
		return
	}
	for name, rec := range recs {
		if rec.Server == w.server && rec.Status != StatusCreating {
			w.told[name] = told{status: statusEvent(rec.Status), ipv4: rec.IPv4}
		}
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
			c, err := w.observe(ctx, ev.Name, typ, ev.Action)
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

// awaitAddress announces a started container's address as soon as DHCP gives it one.
func (w *Worker) awaitAddress(ctx context.Context, name string) {
	deadline := time.Now().Add(addressWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		sleep(ctx, 200*time.Millisecond)
		c, err := w.observe(ctx, name, "", "")
		if err != nil || c.IPv4 != "" || c.Status != "Running" {
			return
		}
	}
}

// syncOne records one container as it is now, without announcing anything:
// command handlers use it, and the lifecycle follower tells what happened.
func (w *Worker) syncOne(ctx context.Context, name string) (events.Container, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	inst, old, err := w.current(ctx, name)
	if err != nil {
		return events.Container{}, err
	}
	rec, _, err := w.apply(ctx, name, inst, old)
	return rec, err
}

// observe records one container and announces the lifecycle event typ that
// prompted it, or, when typ is "", whatever changed since the last announcement.
func (w *Worker) observe(ctx context.Context, name, typ, action string) (events.Container, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	inst, old, err := w.current(ctx, name)
	if err != nil {
		return events.Container{}, err
	}
	rec, mine, err := w.apply(ctx, name, inst, old)
	if err != nil || !mine {
		return rec, err
	}
	if typ == "" {
		w.announceChange(ctx, rec)
	} else {
		w.announceLifecycle(ctx, rec, typ, action)
	}
	return rec, nil
}

func (w *Worker) current(ctx context.Context, name string) (*container.Instance, *events.Container, error) {
	inst, err := w.rt.Get(ctx, name)
	if err != nil && !errors.Is(err, container.ErrNotFound) {
		return nil, nil, workers.Transient("reading container %s: %v", name, err)
	}
	old, err := w.record(ctx, name)
	return inst, old, err
}

// Reconcile compares every container of the server with its record and with what
// was announced, fixes the records and announces the differences.
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
	seen := map[string]bool{}
	for i := range list {
		inst := list[i]
		seen[inst.Name] = true
		rec, mine, err := w.apply(ctx, inst.Name, &inst, recs[inst.Name])
		if err != nil {
			w.log.Warn().Err(err).Str("container", inst.Name).Msg("reconcile")
			continue
		}
		if mine {
			w.announceChange(ctx, rec)
		}
	}
	for name, rec := range recs {
		if seen[name] || rec.Server != w.server {
			continue
		}
		seen[name] = true
		if rec.Status == StatusCreating && time.Since(rec.Updated) < staleReservation {
			continue
		}
		gone, _, err := w.apply(ctx, name, nil, rec)
		if err != nil {
			w.log.Warn().Err(err).Str("container", name).Msg("reconcile")
			continue
		}
		w.announceChange(ctx, gone)
	}
	// Announced once, now neither in Incus nor recorded: deleted while we were not looking.
	for name := range w.told {
		if !seen[name] {
			w.announceChange(ctx, events.Container{Name: name, Server: w.server, Status: "Deleted", Updated: time.Now().UTC()})
		}
	}
	return nil
}

// apply writes the record that inst (nil: gone) implies. mine is false when the
// name belongs to another server, or to a launch still in progress.
func (w *Worker) apply(ctx context.Context, name string, inst *container.Instance, old *events.Container) (events.Container, bool, error) {
	if old != nil && old.Server != w.server {
		// The name belongs to another server: a duplicate made behind skein's back.
		w.log.Warn().Str("container", name).Str("owner", old.Server).Msg("container name already used by another server; not recorded")
		return *old, false, nil
	}
	now := time.Now().UTC()
	if inst == nil {
		if old != nil && old.Status == StatusCreating && time.Since(old.Updated) < staleReservation {
			return *old, false, nil
		}
		rec := events.Container{Name: name, Server: w.server, Status: "Deleted", Updated: now}
		if old != nil {
			if err := w.kv.Delete(ctx, name); err != nil {
				return rec, false, workers.Transient("forgetting %s: %v", name, err)
			}
			rec.Image, rec.Command = old.Image, old.Command
		}
		return rec, true, nil
	}
	rec := events.Container{Name: name, Server: w.server, Status: inst.Status, IPv4: inst.IPv4, Image: inst.Image, Command: inst.Command, Published: inst.Published, Updated: now}
	if old != nil && old.Status == rec.Status && old.IPv4 == rec.IPv4 && old.Image == rec.Image && strings.Join(old.Published, ",") == strings.Join(rec.Published, ",") {
		rec.Updated = old.Updated
		return rec, true, nil
	}
	b, _ := json.Marshal(rec)
	if _, err := w.kv.Put(ctx, name, b); err != nil {
		return rec, false, workers.Transient("recording %s: %v", name, err)
	}
	return rec, true, nil
}

// announceLifecycle tells a lifecycle event as it came, unless its status was
// already told (a reconcile can see a change before its event arrives).
func (w *Worker) announceLifecycle(ctx context.Context, rec events.Container, typ, action string) {
	t, known := w.told[rec.Name]
	ev := events.ContainerEvent{Name: rec.Name, Status: rec.Status, IPv4: rec.IPv4, Cause: "incus", Action: action}
	switch typ {
	case events.TypeContainerCreated:
		if known {
			return
		}
		t = told{status: events.TypeContainerStopped}
	case events.TypeContainerDeleted:
		if !known {
			return
		}
		delete(w.told, rec.Name)
		w.publish(ctx, typ, ev)
		return
	case events.TypeContainerStarted, events.TypeContainerStopped:
		if known && t.status == typ {
			if rec.Status == statusOf(typ) && rec.IPv4 != t.ipv4 {
				t.ipv4 = rec.IPv4
				w.told[rec.Name] = t
				ev.Cause = "reconcile"
				w.publish(ctx, events.TypeContainerUpdated, ev)
			}
			return
		}
		// The event is told as it happened even if the container has moved on since.
		if rec.Status != statusOf(typ) {
			ev.Status, ev.IPv4 = statusOf(typ), ""
		}
		t = told{status: typ, ipv4: ev.IPv4}
	}
	w.told[rec.Name] = t
	w.publish(ctx, typ, ev)
}

// announceChange tells what differs between rec and the last announcement.
func (w *Worker) announceChange(ctx context.Context, rec events.Container) {
	t, known := w.told[rec.Name]
	ev := events.ContainerEvent{Name: rec.Name, Status: rec.Status, IPv4: rec.IPv4, Cause: "reconcile"}
	if rec.Status == "Deleted" {
		if known {
			delete(w.told, rec.Name)
			w.publish(ctx, events.TypeContainerDeleted, ev)
		}
		return
	}
	if !known {
		w.publish(ctx, events.TypeContainerCreated, ev)
		t = told{status: events.TypeContainerStopped}
	}
	if st := statusEvent(rec.Status); st != "" && st != t.status {
		t = told{status: st, ipv4: rec.IPv4}
		w.publish(ctx, st, ev)
	} else if rec.IPv4 != t.ipv4 {
		t.ipv4 = rec.IPv4
		w.publish(ctx, events.TypeContainerUpdated, ev)
	}
	w.told[rec.Name] = t
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

func (w *Worker) publish(ctx context.Context, typ string, ev events.ContainerEvent) {
	if err := w.pub.Publish(ctx, typ, ev); err != nil {
		w.log.Warn().Err(err).Str("type", typ).Str("container", ev.Name).Msg("publishing event")
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
