package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/workers"
)

// Publish creates or extends an ad-hoc entry owned by this server: a service at
// an address (pubservice), or a check added to the entry (pubcheck). An entry
// owned by another server is refused: its owner runs its checks.
func (w *Worker) Publish(ctx context.Context, req *workers.Request) (any, error) {
	var p events.Publish
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	if p.Check != nil {
		if err := validCheck(*p.Check); err != nil {
			return nil, err
		}
		if p.Check.Kind == "tcp" && p.Check.Address == "" {
			return nil, workers.Invalid("ad-hoc tcp check %s needs IP:PORT", p.Check.Name)
		}
	} else if p.IP == "" {
		return nil, workers.Invalid("pubservice %s needs an IP", p.Name)
	}
	for attempt := 0; attempt < 5; attempt++ {
		a, rev, err := w.adhocEntry(ctx, p.Name)
		if err != nil {
			return nil, err
		}
		if rev != 0 && a.Server != w.cfg.Server {
			return nil, workers.Conflict("ad-hoc entry %s belongs to server %s: send it there (-s %s)", p.Name, a.Server, a.Server)
		}
		a.Name, a.Server, a.Updated = p.Name, w.cfg.Server, time.Now().UTC()
		if p.Check == nil {
			a.IP, a.Port, a.Service = p.IP, p.Port, true
		} else {
			if a.IP == "" {
				a.IP = p.Check.Address
			}
			replaced := false
			for i, c := range a.Checks {
				if c.Name == p.Check.Name {
					a.Checks[i], replaced = *p.Check, true
				}
			}
			if !replaced {
				a.Checks = append(a.Checks, *p.Check)
			}
		}
		if a.Checks == nil {
			a.Checks = []events.CheckDef{}
		}
		b, _ := json.Marshal(a)
		if rev == 0 {
			_, err = w.adhoc.Create(ctx, p.Name, b)
		} else {
			_, err = w.adhoc.Update(ctx, p.Name, b, rev)
		}
		if err == nil {
			return a, nil
		}
	}
	return nil, workers.Transient("ad-hoc entry %s changed concurrently", p.Name)
}

// Unpublish removes an ad-hoc entry, or only its checks; removing what is gone succeeds.
func (w *Worker) Unpublish(ctx context.Context, req *workers.Request) (any, error) {
	var p events.Unpublish
	if err := req.Decode(&p); err != nil {
		return nil, workers.Invalid("%v", err)
	}
	a, rev, err := w.adhocEntry(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	if rev == 0 {
		if req.Attempt > 1 {
			return a, nil
		}
		return nil, workers.NotFound("no ad-hoc entry %s: `skein services` lists what is published", p.Name)
	}
	if p.ChecksOnly && a.Service {
		a.Checks, a.Updated = []events.CheckDef{}, time.Now().UTC()
		b, _ := json.Marshal(a)
		if _, err := w.adhoc.Update(ctx, p.Name, b, rev); err != nil {
			return nil, workers.Transient("updating ad-hoc entry %s: %v", p.Name, err)
		}
		return a, nil
	}
	if err := w.adhoc.Delete(ctx, p.Name, jetstream.LastRevision(rev)); err != nil {
		return nil, workers.Transient("removing ad-hoc entry %s: %v", p.Name, err)
	}
	return a, nil
}

// adhocEntry reads an ad-hoc entry with its revision (0: none).
func (w *Worker) adhocEntry(ctx context.Context, name string) (events.Adhoc, uint64, error) {
	e, err := w.adhoc.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.Adhoc{Name: name, Server: w.cfg.Server, Checks: []events.CheckDef{}}, 0, nil
	}
	if err != nil {
		return events.Adhoc{}, 0, workers.Transient("reading ad-hoc entry %s: %v", name, err)
	}
	var a events.Adhoc
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return events.Adhoc{}, 0, workers.Transient("bad ad-hoc entry %s: %v", name, err)
	}
	return a, e.Revision(), nil
}
