// Package containers handles container lifecycle commands on one server and
// keeps the cluster's container records and events in step with the runtime,
// including changes made behind skein's back.
package containers

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/workers"
)

// StatusCreating marks a record whose container is being launched.
const StatusCreating = "Creating"

// addressWait bounds how long launch and start wait for DHCP.
const addressWait = 20 * time.Second

// Worker runs container commands for one server.
type Worker struct {
	server string
	rt     container.Runtime
	store  *bus.Store[events.Container]
	pub    *bus.Publisher
	log    zerolog.Logger

	// mu serialises record updates so lifecycle events and reconciliation do not interleave.
	mu sync.Mutex
	// told is what was last announced per container, so nothing is told twice or missed.
	told map[string]told
	// gone are called with a container's name when it is deleted.
	gone []func(name string)
	// ready refuses what the server cannot run (its network, pool, project
	// or the image lacking), with the fix; nil checks nothing.
	ready func(ctx context.Context, image string) error
	// fetch imports an image from the bus when it is stored there: true
	// when it was; nil fetches nothing.
	fetch func(ctx context.Context, image string) (bool, error)
	// stored says whether an image is stored on the bus (nil: none is).
	stored func(ctx context.Context, image string) (bool, error)
	// leases wakes those who wait for a container's address.
	leases *leaseNews
	// claimed are addresses picked for launches whose create has not
	// returned yet (it is not in the runtime's list before).
	claimMu sync.Mutex
	claimed map[netip.Addr]bool
}

// SetFetcher makes a launch of an image the server lacks fetch it from the
// bus first, when it is stored there.
func (w *Worker) SetFetcher(fetch func(ctx context.Context, image string) (bool, error)) {
	w.fetch = fetch
}

// SetStored makes the server answer that it has an image it lacks but can
// fetch from the bus (stored says whether the bus has it): a job may be
// placed there, and its launch fetches it.
func (w *Worker) SetStored(stored func(ctx context.Context, image string) (bool, error)) {
	w.stored = stored
}

// SetReadiness makes launches and starts ask ready first: a server that
// lacks what they need refuses them with the fix, not with Incus's error.
func (w *Worker) SetReadiness(ready func(ctx context.Context, image string) error) {
	w.ready = ready
}

func (w *Worker) checkReady(ctx context.Context, image string) error {
	if w.ready == nil {
		return nil
	}
	return w.ready(ctx, image)
}

// New returns the container worker of server.
func New(server string, rt container.Runtime, store *bus.Store[events.Container], pub *bus.Publisher, log zerolog.Logger) *Worker {
	return &Worker{server: server, rt: rt, store: store, pub: pub, log: log, told: map[string]told{}, leases: newLeaseNews(), claimed: map[netip.Addr]bool{}}
}

// Lock is the lock key of container name: its commands run one at a time.
func Lock(name string) string { return "container/" + name }

func byName(p events.ContainerAction) string { return Lock(p.Name) }

// Register adds the worker's handlers to the runtime, in one visible block.
func (w *Worker) Register(r *workers.Runtime) {
	workers.Handle(r, workers.Command[events.Launch, events.Container]{Type: events.TypeLaunch, Lock: func(p events.Launch) string { return Lock(p.Name) }, Run: w.Launch})
	workers.Handle(r, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStart, Lock: byName, Run: w.Start})
	workers.Handle(r, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStop, Lock: byName, Run: w.Stop})
	workers.Handle(r, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeRestart, Lock: byName, Run: w.Restart})
	workers.Handle(r, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeDelete, Lock: byName, Run: w.Delete})
	workers.Handle(r, workers.Command[events.PortForward, events.Container]{Type: events.TypePublishPort, Lock: func(p events.PortForward) string { return Lock(p.Name) }, Run: w.PublishPort})
	workers.Handle(r, workers.Command[events.PortForward, events.Container]{Type: events.TypeUnpublishPort, Lock: func(p events.PortForward) string { return Lock(p.Name) }, Run: w.UnpublishPort})
	workers.HandleQuery(r, workers.Query[events.ImageAsk, events.ImageAnswer]{Type: events.TypeImageAsk, Run: w.HasImage})
}

// HasImage says whether this server has an image, or can fetch it from the
// bus when a launch needs it (the scheduler asks before it places).
func (w *Worker) HasImage(ctx context.Context, _ *workers.Request, p events.ImageAsk) (events.ImageAnswer, error) {
	ok, err := w.rt.ImageExists(ctx, p.Image)
	if err != nil {
		return events.ImageAnswer{}, workers.Transient("looking up image %s: %v", p.Image, err)
	}
	if !ok && w.stored != nil {
		if ok, err = w.stored(ctx, p.Image); err != nil {
			return events.ImageAnswer{}, workers.Transient("looking up image %s on the bus: %v", p.Image, err)
		}
	}
	return events.ImageAnswer{Exists: ok}, nil
}

// OnGone calls f with a container's name whenever one of this server's
// containers is deleted, by skein or behind its back.
func (w *Worker) OnGone(f func(name string)) {
	w.mu.Lock()
	w.gone = append(w.gone, f)
	w.mu.Unlock()
}

// PublishPort forwards a host port into a container; the same forward again is a no-op.
func (w *Worker) PublishPort(ctx context.Context, req *workers.Request, p events.PortForward) (events.Container, error) {
	if p.Port < 1 {
		return events.Container{}, workers.Invalid("which port of %s? give a port from 1 to 65535", p.Name)
	}
	list, err := w.rt.List(ctx)
	if err != nil {
		return events.Container{}, workers.Transient("listing containers: %v", err)
	}
	prefix := fmt.Sprintf("%d->", p.HostPort)
	for _, i := range list {
		for _, pub := range i.Published {
			if strings.HasPrefix(pub, prefix) && (i.Name != p.Name || pub != fmt.Sprintf("%d->%d", p.HostPort, p.Port)) {
				return events.Container{}, workers.Conflict("host port %d of server %s already forwards to %s (%s): pick another with --host-port, or unpub it", p.HostPort, w.server, i.Name, pub)
			}
		}
	}
	return w.forward(ctx, p.Name, p.HostPort, p.Port)
}

// UnpublishPort removes a forwarded host port; removing one that is gone succeeds.
func (w *Worker) UnpublishPort(ctx context.Context, req *workers.Request, p events.PortForward) (events.Container, error) {
	return w.forward(ctx, p.Name, p.HostPort, 0)
}

func (w *Worker) forward(ctx context.Context, name string, hostPort, port int) (events.Container, error) {
	err := w.rt.Publish(ctx, name, hostPort, port)
	if errors.Is(err, container.ErrNotFound) {
		return events.Container{}, workers.NotFound("no container %s on server %s: `skein list` shows what exists", name, w.server)
	}
	if err != nil {
		if container.IsPermanent(err) {
			return events.Container{}, workers.Conflict("forwarding host port %d to %s: %v", hostPort, name, err)
		}
		return events.Container{}, workers.Transient("forwarding host port %d to %s: %v", hostPort, name, err)
	}
	return w.syncOne(ctx, name)
}

// Launch creates and starts a container. A redelivered launch resumes where the
// last attempt stopped instead of creating a second container.
func (w *Worker) Launch(ctx context.Context, req *workers.Request, p events.Launch) (events.Container, error) {
	return w.LaunchContainer(ctx, req, p)
}

// LaunchContainer creates and starts a container for the command req, as the
// launch command does; other workers (endpoints, load balancers) build on it.
func (w *Worker) LaunchContainer(ctx context.Context, req *workers.Request, p events.Launch) (events.Container, error) {
	var none events.Container
	id := req.ID()
	if err := w.checkReady(ctx, p.Image); err != nil {
		return none, err
	}
	if p.IPv4 != "" {
		if err := w.CheckAddress(ctx, p.Name, p.IPv4); err != nil {
			return none, err
		}
	}
	// Names are unique across the cluster: look on every server.
	named, err := w.store.FindByName(ctx, p.Name)
	if err != nil {
		return none, workers.Transient("looking up %s: %v", p.Name, err)
	}
	var rec *events.Container
	if named != nil {
		rec = &named.Value
	}
	if rec != nil && rec.Command != id {
		return none, workers.Conflict("a container named %s already exists on server %s: pick another name or `skein delete %s` first", p.Name, rec.Server, p.Name)
	}
	inst, err := w.rt.Get(ctx, p.Name)
	if err != nil && !errors.Is(err, container.ErrNotFound) {
		return none, workers.Transient("reading container %s: %v", p.Name, err)
	}
	if inst != nil && inst.Command != id {
		return none, workers.Conflict("a container named %s already exists on server %s (made outside skein): pick another name", p.Name, w.server)
	}
	if inst == nil {
		ok, err := w.rt.ImageExists(ctx, p.Image)
		if err != nil {
			return none, workers.Transient("looking up image %s: %v", p.Image, err)
		}
		if !ok && w.fetch != nil {
			req.Progress("image", fmt.Sprintf("image %s is not on %s: fetching it from the bus", p.Image, w.server))
			stored, err := w.fetch(ctx, p.Image)
			if err != nil {
				return none, workers.Transient("fetching image %s from the bus: %v", p.Image, err)
			}
			if stored {
				if ok, err = w.rt.ImageExists(ctx, p.Image); err != nil {
					return none, workers.Transient("looking up image %s: %v", p.Image, err)
				}
			}
		}
		if !ok {
			return none, workers.NotFound("image %q is neither on server %s nor on the bus: import it there (`incus image list` shows what is there), or store it on the bus from a machine that has it (skein images push)", p.Image, w.server)
		}
		if rec == nil {
			if err := w.reserve(ctx, p, id); err != nil {
				return none, err
			}
		}
		req.Progress("create", fmt.Sprintf("creating %s from %s on %s", p.Name, p.Image, w.server))
		err = w.create(ctx, container.CreateSpec{Name: p.Name, Image: p.Image, IPv4: p.IPv4, Command: id, Job: p.Job, JobVersion: p.JobVersion})
		if err != nil {
			// An earlier attempt's create may have finished meanwhile: then it is ours.
			if again, gerr := w.rt.Get(ctx, p.Name); gerr == nil && again.Command == id {
				err = nil
			}
		}
		if err != nil {
			var we *workers.Error
			if errors.As(err, &we) {
				w.release(ctx, p.Name, id)
				return none, err
			}
			if container.IsPermanent(err) {
				w.release(ctx, p.Name, id)
				return none, workers.Invalid("creating %s: %v", p.Name, err)
			}
			return none, workers.Transient("creating %s: %v", p.Name, err)
		}
		if inst, err = w.rt.Get(ctx, p.Name); err != nil {
			return none, workers.Transient("reading container %s: %v", p.Name, err)
		}
	}
	since := time.Now()
	if inst.Status != "Running" {
		req.Progress("start", "starting "+p.Name)
		if err := w.start(ctx, p.Name, p.IPv4 == ""); err != nil {
			var we *workers.Error
			if errors.As(err, &we) {
				return none, err
			}
			if p.IPv4 != "" && container.IsPermanent(err) && strings.Contains(err.Error(), `"`+p.IPv4+`"`) {
				return none, workers.Conflict("starting %s: %v: another instance on server %s's network holds %s (it stays, stopped): `skein delete %s` and launch it with another --ip", p.Name, err, w.server, p.IPv4, p.Name)
			}
			return none, workers.Transient("starting %s: %v", p.Name, err)
		}
	}
	req.Progress("address", "waiting for an IPv4 address")
	return w.settle(ctx, p.Name, since)
}

// Start starts a container; starting a running one is a no-op.
func (w *Worker) Start(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
	return w.act(ctx, req, p.Name, func(inst *container.Instance) error {
		if inst.Status == "Running" {
			return nil
		}
		return w.rt.Start(ctx, inst.Name)
	}, true)
}

// Stop stops a container; stopping a stopped one is a no-op.
func (w *Worker) Stop(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
	return w.act(ctx, req, p.Name, func(inst *container.Instance) error {
		if inst.Status == "Stopped" {
			return nil
		}
		return w.rt.Stop(ctx, inst.Name, p.Force)
	}, false)
}

// Restart restarts a running container, or starts a stopped one. The boot it
// found is journaled first: a redelivered restart that finds another boot knows
// the restart happened and does not bounce the container a second time.
func (w *Worker) Restart(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
	return w.act(ctx, req, p.Name, func(inst *container.Instance) error {
		before, err := req.Once(ctx, "boot", func() (string, error) { return "boot:" + inst.Boot, nil })
		if err != nil {
			return err
		}
		if before != "boot:"+inst.Boot {
			if inst.Status == "Running" {
				return nil // restarted by an earlier attempt
			}
			return w.rt.Start(ctx, inst.Name)
		}
		if inst.Status != "Running" {
			return w.rt.Start(ctx, inst.Name)
		}
		return w.rt.Restart(ctx, inst.Name, p.Force)
	}, true)
}

// Delete stops and deletes a container; deleting a missing one succeeds.
func (w *Worker) Delete(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
	return w.DeleteContainer(ctx, req, p.Name)
}

// DeleteContainer stops and deletes a container for the command req.
func (w *Worker) DeleteContainer(ctx context.Context, req *workers.Request, name string) (events.Container, error) {
	var none events.Container
	p := events.ContainerAction{Name: name}
	inst, err := w.rt.Get(ctx, p.Name)
	if err != nil && !errors.Is(err, container.ErrNotFound) {
		return none, workers.Transient("reading container %s: %v", p.Name, err)
	}
	if inst != nil {
		if inst.Status != "Stopped" {
			req.Progress("stop", "stopping "+p.Name)
			if err := w.rt.Stop(ctx, p.Name, true); err != nil {
				return none, workers.Transient("stopping %s: %v", p.Name, err)
			}
		}
		req.Progress("delete", "deleting "+p.Name)
		if err := w.rt.Delete(ctx, p.Name); err != nil && !errors.Is(err, container.ErrNotFound) {
			return none, workers.Transient("deleting %s: %v", p.Name, err)
		}
	}
	// The lifecycle follower tells the deletion and then forgets the record, so
	// the event cannot be lost; until it does, the record says Deleted.
	if _, err := w.syncOne(ctx, p.Name); err != nil {
		return none, err
	}
	return events.Container{Name: p.Name, Server: w.server, Status: "Deleted", Updated: time.Now().UTC()}, nil
}

// act runs a state change on an existing container and returns its record after.
func (w *Worker) act(ctx context.Context, req *workers.Request, name string, change func(*container.Instance) error, wantAddress bool) (events.Container, error) {
	var none events.Container
	if wantAddress {
		// Starting needs the server's network and pool.
		if err := w.checkReady(ctx, ""); err != nil {
			return none, err
		}
	}
	inst, err := w.rt.Get(ctx, name)
	if errors.Is(err, container.ErrNotFound) {
		return none, workers.NotFound("no container %s on server %s: `skein list` shows what exists", name, w.server)
	}
	if err != nil {
		return none, workers.Transient("reading container %s: %v", name, err)
	}
	since := time.Now()
	if err := change(inst); err != nil {
		var we *workers.Error
		if errors.As(err, &we) {
			return none, err
		}
		if container.IsPermanent(err) {
			return none, workers.Conflict("%s %s: %v", req.Envelope.Type, name, err)
		}
		return none, workers.Transient("%s %s: %v", req.Envelope.Type, name, err)
	}
	if wantAddress {
		req.Progress("address", "waiting for an IPv4 address")
		return w.settle(ctx, name, since)
	}
	return w.syncOne(ctx, name)
}

// settle waits (bounded) for a container started at since to get its
// address, then records it.
func (w *Worker) settle(ctx context.Context, name string, since time.Time) (events.Container, error) {
	if err := w.waitAddress(ctx, name, since); err != nil {
		if ctx.Err() != nil {
			return events.Container{}, ctx.Err()
		}
		return events.Container{}, workers.Transient("reading container %s: %v", name, err)
	}
	return w.syncOne(ctx, name)
}

// CheckAddress refuses a static address outside the server's subnet or already in use.
func (w *Worker) CheckAddress(ctx context.Context, name, ip string) error {
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is4() {
		return workers.Invalid("%q is not an IPv4 address", ip)
	}
	sn, err := w.rt.Subnet(ctx)
	if err != nil {
		return workers.Transient("reading the container subnet: %v", err)
	}
	if !sn.Contains(addr) {
		return workers.Invalid("address %s is not usable on server %s: pick one inside its container subnet %s (not the gateway %s), or omit --ip", ip, w.server, sn.Prefix, sn.Gateway)
	}
	list, err := w.rt.List(ctx)
	if err != nil {
		return workers.Transient("listing containers: %v", err)
	}
	for _, i := range list {
		if i.Name != name && (i.IPv4 == ip || i.StaticIPv4 == ip) {
			return workers.Conflict("address %s is already used by container %s on server %s: pick another", ip, i.Name, w.server)
		}
	}
	return nil
}

// reserve claims a container name cluster-wide before anything is created.
func (w *Worker) reserve(ctx context.Context, p events.Launch, id string) error {
	rec := events.Container{Name: p.Name, Server: w.server, Status: StatusCreating, Image: p.Image, Command: id, Job: p.Job, JobVersion: p.JobVersion, Updated: time.Now().UTC()}
	if _, err := w.store.Create(ctx, bus.Key(w.server, p.Name), rec); err != nil {
		if errors.Is(err, bus.ErrExists) {
			other, _ := w.record(ctx, p.Name)
			if other != nil && other.Command == id {
				return nil
			}
			where := "another server"
			if other != nil {
				where = "server " + other.Server
			}
			return workers.Conflict("a container named %s already exists on %s: pick another name", p.Name, where)
		}
		return workers.Transient("reserving name %s: %v", p.Name, err)
	}
	w.log.Info().Str("container", p.Name).Str("command", id).Msg("container name reserved")
	return nil
}

// release drops a reservation made by command id after a launch that created nothing.
func (w *Worker) release(ctx context.Context, name, id string) {
	if e, _ := w.store.Find(ctx, bus.Key(w.server, name)); e != nil && e.Value.Command == id && e.Value.Status == StatusCreating {
		if w.store.Delete(ctx, bus.Key(w.server, name), e.Revision) == nil {
			w.log.Info().Str("container", name).Str("command", id).Msg("container name released")
		}
	}
}

// record reads the record of a container of this server; nil when there is none.
func (w *Worker) record(ctx context.Context, name string) (*events.Container, error) {
	e, err := w.store.Find(ctx, bus.Key(w.server, name))
	if err != nil {
		return nil, workers.Transient("reading record of %s: %v", name, err)
	}
	if e == nil {
		return nil, nil
	}
	return &e.Value, nil
}
