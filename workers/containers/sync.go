package containers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/skeinhq/skein/bus"
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
	// seq counts the container's events told; the next event's id derives from it.
	seq int
	// gen tells this container from an earlier one of the same name.
	gen string
}

// eventID is the id of a container's seq-th event: the same on every attempt to
// tell it, also by an agent that restarted, so that repeats can be dropped.
func eventID(server, name, gen string, seq int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%s/%d", server, name, gen, seq)))
	return "ev-" + hex.EncodeToString(sum[:12])
}

// Run follows the runtime's lifecycle events and reconciles records until ctx ends.
// After every (re)connection it reconciles first, so changes made while the
// stream was down, or the agent was, are caught up and announced.
func (w *Worker) Run(ctx context.Context) {
	go w.leases.follow(ctx, w.rt, w.log)
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
		if rec.Server != w.server {
			continue
		}
		if rec.Told != nil {
			w.told[name] = told{status: rec.Told.Event, ipv4: rec.Told.IPv4, seq: rec.Told.Seq, gen: rec.Told.Gen}
		} else if rec.Status != StatusCreating {
			// A record from before events were journaled: take it as told.
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
				// Its DHCP client may have its lease before Incus tells the start.
				since := ev.Time
				if since.IsZero() {
					since = time.Now()
				}
				go w.awaitAddress(ctx, ev.Name, since.Add(-time.Second))
			}
		case <-tick.C:
			if err := w.Reconcile(ctx); err != nil {
				w.log.Warn().Err(err).Msg("reconcile")
			}
		}
	}
}

// awaitAddress announces the address of a container started at since as
// soon as DHCP gives it one.
func (w *Worker) awaitAddress(ctx context.Context, name string, since time.Time) {
	if err := w.waitAddress(ctx, name, since); err != nil {
		return
	}
	if _, err := w.observe(ctx, name, "", ""); err != nil {
		w.log.Warn().Err(err).Str("container", name).Msg("recording its address")
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
	rec, _, err := w.apply(ctx, name, inst, old, "instance-deleted")
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
	rec, mine, err := w.apply(ctx, name, inst, old, action)
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
		rec, mine, err := w.apply(ctx, inst.Name, &inst, recs[inst.Name], "")
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
		if _, _, err := w.apply(ctx, name, nil, rec, ""); err != nil {
			w.log.Warn().Err(err).Str("container", name).Msg("reconcile")
		}
	}
	// Announced once, now neither in Incus nor recorded: deleted while we were not looking.
	for name := range w.told {
		if !seen[name] {
			if err := w.tellDeleted(ctx, name, ""); err != nil {
				w.log.Warn().Err(err).Str("container", name).Msg("reconcile")
				continue
			}
			w.forget(name)
		}
	}
	return nil
}

// apply writes the record that inst (nil: gone) implies. mine is false when the
// name belongs to another server, or to a launch still in progress. action is
// the Incus action that showed the change, "" when reconciliation found it.
func (w *Worker) apply(ctx context.Context, name string, inst *container.Instance, old *events.Container, action string) (events.Container, bool, error) {
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
			rec.Image, rec.Command, rec.Job, rec.JobVersion = old.Image, old.Command, old.Job, old.JobVersion
		}
		// The deletion is told before the record goes: a record is what makes an
		// agent that restarts tell what it had not told yet.
		if _, known := w.told[name]; known {
			if err := w.tellDeleted(ctx, rec.Name, action); err != nil {
				return rec, false, err
			}
		}
		if old != nil {
			if err := w.store.Delete(ctx, bus.Key(w.server, name), 0); err != nil {
				return rec, false, workers.Transient("forgetting %s: %v", name, err)
			}
			w.log.Info().Str("container", name).Str("action", action).Msg("container record removed")
		}
		w.forget(name)
		return rec, true, nil
	}
	rec := events.Container{Name: name, Server: w.server, Status: inst.Status, IPv4: inst.IPv4, Image: inst.Image, Command: inst.Command, Job: inst.Job, JobVersion: inst.JobVersion, Published: inst.Published, Updated: now}
	if old != nil {
		rec.Told = old.Told
	}
	if old != nil && old.Status == rec.Status && old.IPv4 == rec.IPv4 && old.Image == rec.Image && old.Job == rec.Job && old.JobVersion == rec.JobVersion && strings.Join(old.Published, ",") == strings.Join(rec.Published, ",") {
		rec.Updated = old.Updated
		return rec, true, nil
	}
	if _, err := w.store.Put(ctx, bus.Key(w.server, name), rec); err != nil {
		return rec, false, workers.Transient("recording %s: %v", name, err)
	}
	// Each write said, with what showed it ("" a look of the agent's own):
	// a record seen out of step with Incus can be traced to its writer.
	w.log.Info().Str("container", name).Str("status", rec.Status).Str("ipv4", rec.IPv4).Str("action", action).Msg("container recorded")
	return rec, true, nil
}

// forget tells the OnGone listeners that a container is gone.
func (w *Worker) forget(name string) {
	for _, f := range w.gone {
		go f(name)
	}
}

// tellDeleted announces a container's deletion under its next event id; action
// is the Incus action that showed it, "" when reconciliation found it.
func (w *Worker) tellDeleted(ctx context.Context, name, action string) error {
	t := w.told[name]
	ev := events.ContainerEvent{Name: name, Status: "Deleted", Cause: "reconcile"}
	if action != "" {
		ev.Cause, ev.Action = "incus", action
	}
	if err := w.pub.Tell(ctx, eventID(w.server, name, t.gen, t.seq+1), events.TypeContainerDeleted, ev); err != nil {
		return workers.Transient("telling the deletion of %s: %v", name, err)
	}
	delete(w.told, name)
	return nil
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
		w.tell(ctx, rec, t, told{status: events.TypeContainerStopped}, tale{typ, ev})
		return
	case events.TypeContainerDeleted:
		// A deletion is told where it is recorded (apply), before the record goes.
		return
	case events.TypeContainerStarted, events.TypeContainerStopped:
		if known && t.status == typ {
			if rec.Status == statusOf(typ) && rec.IPv4 != t.ipv4 {
				ev.Cause = "reconcile"
				w.tell(ctx, rec, t, told{status: t.status, ipv4: rec.IPv4}, tale{events.TypeContainerUpdated, ev})
			}
			return
		}
		// The event is told as it happened even if the container has moved on since.
		if rec.Status != statusOf(typ) {
			ev.Status, ev.IPv4 = statusOf(typ), ""
		}
		w.tell(ctx, rec, t, told{status: typ, ipv4: ev.IPv4}, tale{typ, ev})
		return
	}
	w.tell(ctx, rec, t, t, tale{typ, ev})
}

// tale is one event to tell.
type tale struct {
	typ string
	ev  events.ContainerEvent
}

// tell announces tales in order, each under the container's next event id,
// retrying each until it is stored; only then is now what was told, written
// into the record so that an agent that restarts starts from it.
func (w *Worker) tell(ctx context.Context, rec events.Container, was, now told, tales ...tale) {
	seq, gen := was.seq, was.gen
	if gen == "" {
		gen = events.NewID()[:8]
	}
	for _, tl := range tales {
		if err := w.pub.Tell(ctx, eventID(w.server, rec.Name, gen, seq+1), tl.typ, tl.ev); err != nil {
			w.log.Warn().Err(err).Str("type", tl.typ).Str("container", rec.Name).Msg("telling an event")
			return
		}
		seq++
	}
	now.seq, now.gen = seq, gen
	w.told[rec.Name] = now
	e, err := w.store.Find(ctx, bus.Key(w.server, rec.Name))
	if err != nil || e == nil || e.Value.Server != w.server {
		return
	}
	e.Value.Told = &events.ContainerTold{Event: now.status, IPv4: now.ipv4, Seq: now.seq, Gen: now.gen}
	if _, err := w.store.Update(ctx, bus.Key(w.server, rec.Name), e.Value, e.Revision); err != nil {
		w.log.Warn().Err(err).Str("container", rec.Name).Msg("recording what was told")
	}
}

// announceChange tells what differs between rec and the last announcement.
func (w *Worker) announceChange(ctx context.Context, rec events.Container) {
	was, known := w.told[rec.Name]
	ev := events.ContainerEvent{Name: rec.Name, Status: rec.Status, IPv4: rec.IPv4, Cause: "reconcile"}
	if rec.Status == "Deleted" {
		return // told where it is recorded (apply)
	}
	now := was
	var tales []tale
	if !known {
		tales = append(tales, tale{events.TypeContainerCreated, ev})
		now = told{status: events.TypeContainerStopped}
	}
	if st := statusEvent(rec.Status); st != "" && st != now.status {
		now = told{status: st, ipv4: rec.IPv4}
		tales = append(tales, tale{st, ev})
	} else if rec.IPv4 != now.ipv4 {
		now.ipv4 = rec.IPv4
		tales = append(tales, tale{events.TypeContainerUpdated, ev})
	}
	if len(tales) > 0 {
		w.tell(ctx, rec, was, now, tales...)
	}
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

// records returns the records of this server's containers, by name.
func (w *Worker) records(ctx context.Context) (map[string]*events.Container, error) {
	out := map[string]*events.Container{}
	all, err := w.store.ListServer(ctx, w.server)
	if err != nil {
		return nil, err
	}
	for i := range all {
		out[all[i].Value.Name] = &all[i].Value
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
