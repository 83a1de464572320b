package discovery

import (
	"context"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/workers"
)

// Publish creates or extends an ad-hoc entry owned by this server: a service at
// an address (pubservice), or a check added to the entry (pubcheck). An entry
// owned by another server is refused: its owner runs its checks.
func (w *Worker) Publish(ctx context.Context, req *workers.Request, p events.Publish) (events.Adhoc, error) {
	if p.Check != nil {
		if err := validCheck(*p.Check); err != nil {
			return events.Adhoc{}, err
		}
		if p.Check.Kind == "tcp" && p.Check.Address == "" {
			return events.Adhoc{}, workers.Invalid("ad-hoc tcp check %s needs IP:PORT", p.Check.Name)
		}
	} else if p.IP == "" {
		return events.Adhoc{}, workers.Invalid("pubservice %s needs an IP", p.Name)
	}
	if other, err := w.adhoc.FindByName(ctx, p.Name); err != nil {
		return events.Adhoc{}, workers.FromStore(err, "ad-hoc entry "+p.Name)
	} else if other != nil && other.Value.Server != w.host.Server {
		return events.Adhoc{}, workers.Conflict("ad-hoc entry %s belongs to server %s: send it there (-s %s)", p.Name, other.Value.Server, other.Value.Server)
	}
	e, err := w.adhoc.Modify(ctx, bus.Key(w.host.Server, p.Name), func(a events.Adhoc, exists bool) (events.Adhoc, error) {
		a.Name, a.Server, a.Updated = p.Name, w.host.Server, time.Now().UTC()
		if p.Check == nil {
			a.IP, a.Port, a.Service = p.IP, p.Port, true
		} else {
			if a.IP == "" {
				a.IP = p.Check.Address
			}
			a.Checks = upsert(a.Checks, *p.Check, func(c events.CheckDef) string { return c.Name })
		}
		if a.Checks == nil {
			a.Checks = []events.CheckDef{}
		}
		return a, nil
	})
	if err != nil {
		return events.Adhoc{}, workers.FromStore(err, "ad-hoc entry "+p.Name)
	}
	return e.Value, nil
}

// Unpublish removes an ad-hoc entry, or only its checks; removing what this
// command already removed on an earlier attempt succeeds.
func (w *Worker) Unpublish(ctx context.Context, req *workers.Request, p events.Unpublish) (events.Adhoc, error) {
	cur, err := w.adhoc.Find(ctx, bus.Key(w.host.Server, p.Name))
	if err != nil {
		return events.Adhoc{}, workers.FromStore(err, "ad-hoc entry "+p.Name)
	}
	found, err := req.FirstSaw(ctx, "found", cur != nil)
	if err != nil {
		return events.Adhoc{}, err
	}
	if cur == nil {
		if found {
			return events.Adhoc{Name: p.Name, Server: w.host.Server, Checks: []events.CheckDef{}, Updated: time.Now().UTC()}, nil
		}
		return events.Adhoc{}, workers.NotFound("no ad-hoc entry %s: `skein services` lists what is published", p.Name)
	}
	a := cur.Value
	if p.ChecksOnly && a.Service {
		a.Checks, a.Updated = []events.CheckDef{}, time.Now().UTC()
		if _, err := w.adhoc.Update(ctx, cur.Key, a, cur.Revision); err != nil {
			return events.Adhoc{}, workers.FromStore(err, "ad-hoc entry "+p.Name)
		}
		return a, nil
	}
	if err := w.adhoc.Delete(ctx, cur.Key, cur.Revision); err != nil {
		return events.Adhoc{}, workers.FromStore(err, "ad-hoc entry "+p.Name)
	}
	return a, nil
}
