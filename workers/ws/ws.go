// Package ws runs web servers on one server: nginx in a service container
// (through the svc layer) publishing apps by URL, its site rendered from
// skein's state by a pure function, checked with nginx -t before it replaces
// the running one, reloaded gracefully, and rolled back whole when anything
// fails.
package ws

import (
	"context"
	"sort"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/discovery"
	"github.com/skeinhq/skein/workers/svc"
)

// component is how a web server checks and reloads its files.
var component = svc.Component{Name: "nginx", Unit: "nginx", Check: "nginx -t -q"}

// Config configures the web server worker of one server.
type Config struct {
	svc.Deps
	// Log is the worker's logger.
	Log zerolog.Logger
}

// Capability is the web server capability of an agent.
func Capability(ctx context.Context, d svc.Deps) (svc.Capability, error) {
	return New(ctx, Config{Deps: d, Log: d.Host.Log.With().Str("worker", "ws").Logger()})
}

// Worker is the web server worker of one server.
type Worker struct {
	cfg       Config
	host      *svc.Host
	kind      *svc.Kind[events.WS, *events.WS]
	endpoints *bus.Store[events.Endpoint]
	kick      chan struct{}
}

// New returns the web server worker.
func New(ctx context.Context, cfg Config) (*Worker, error) {
	st, err := bus.OpenStore[events.WS](ctx, cfg.JS)
	if err != nil {
		return nil, err
	}
	eps, err := bus.OpenStore[events.Endpoint](ctx, cfg.JS)
	if err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, host: cfg.Host, endpoints: eps, kick: make(chan struct{}, 1)}
	w.kind = &svc.Kind[events.WS, *events.WS]{Noun: "web server", Prefix: "ws", ListCmd: "skein listws", Store: st,
		Gone: func(ctx context.Context, s events.WS) {
			w.publish(ctx, events.TypeWSChanged, events.WSChange{Name: s.Name, Change: "deleted", Apps: len(s.Apps), Cause: "reconcile"})
		}}
	return w, nil
}

// Register adds the worker's handlers to the runtime, in one visible block.
func (w *Worker) Register(r *workers.Runtime) {
	k := w.kind
	workers.Handle(r, workers.Command[events.WSAdd, events.WS]{Type: events.TypeWSAdd, Lock: func(p events.WSAdd) string { return svc.NameLock(k, p.Name) }, Deadline: 3 * time.Minute, Run: w.Add})
	workers.Handle(r, workers.Command[events.WSRef, events.WS]{Type: events.TypeWSDelete, Lock: func(p events.WSRef) string { return k.Lock(p.Name) }, Run: w.Delete})
	workers.Handle(r, workers.Command[events.AppPublish, events.WS]{Type: events.TypeAppPublish, Lock: func(p events.AppPublish) string { return k.Lock(p.WS) }, Run: w.Publish})
	workers.Handle(r, workers.Command[events.AppRef, events.WS]{Type: events.TypeAppDelete, Lock: func(p events.AppRef) string { return k.Lock(p.WS) }, Run: w.Unpublish})
}

// Run repairs the web server records from what runs until ctx ends.
func (w *Worker) Run(ctx context.Context) { svc.Follow(ctx, w.host, w.kind, w.kick, 30*time.Second) }

// Gone tells the worker a container is gone: a web server's record may be a ghost now.
func (w *Worker) Gone(string) {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// files is a web server's whole configuration.
func files(ws events.WS) ([]svc.File, error) {
	main, err := RenderMain(ws)
	if err != nil {
		return nil, workers.Invalid("%v", err)
	}
	site, err := RenderSite(ws)
	if err != nil {
		return nil, workers.Invalid("%v", err)
	}
	return []svc.File{{Path: mainPath, Data: []byte(main), Mode: 0o644}, {Path: sitePath, Data: []byte(site), Mode: 0o644}}, nil
}

// Add runs a web server in a container on this server; it publishes no app yet.
func (w *Worker) Add(ctx context.Context, req *workers.Request, p events.WSAdd) (events.WS, error) {
	var none events.WS
	e, err := svc.Claim(ctx, req, w.host, w.kind, p.Name, "ws", events.WS{Apps: []events.App{}})
	if err != nil {
		return none, err
	}
	if e.Value.Status == events.StatusReady {
		return e.Value, nil
	}
	name := e.Value.Name
	if _, err := svc.Launch(ctx, req, w.host, name, ""); err != nil {
		return none, err
	}
	req.Progress("configure", "configuring nginx")
	set, err := files(e.Value)
	if err != nil {
		return none, err
	}
	if e.Value.Applied, err = svc.Apply(ctx, w.host.Runtime, name, component, set, svc.Reload, e.Value.Applied); err != nil {
		return none, err
	}
	ws, err := svc.Ready(ctx, w.kind, e)
	if err != nil {
		return none, err
	}
	w.publish(ctx, events.TypeWSChanged, events.WSChange{Name: name, Change: "added"})
	return ws, nil
}

// Delete removes a web server and its container.
func (w *Worker) Delete(ctx context.Context, req *workers.Request, p events.WSRef) (events.WS, error) {
	ws, err := svc.Remove(ctx, req, w.host, w.kind, p.Name, nil)
	if err != nil {
		return ws, err
	}
	w.publish(ctx, events.TypeWSChanged, events.WSChange{Name: p.Name, Change: "deleted", Apps: len(ws.Apps)})
	return ws, nil
}

// Publish publishes an app by URL. The same app again is a no-op; a URL the
// web server already publishes elsewhere is refused (delapp it first).
func (w *Worker) Publish(ctx context.Context, req *workers.Request, p events.AppPublish) (events.WS, error) {
	if err := CheckTarget(p.Target); err != nil {
		return events.WS{}, workers.Invalid("%v", err)
	}
	same := false
	ws, err := w.change(ctx, p.WS, func(ws *events.WS) error {
		for _, a := range ws.Apps {
			if a.URL != p.URL {
				continue
			}
			if a.Target == p.Target {
				same = true
				return nil
			}
			return workers.Conflict("web server %s already publishes %s (to %s:%d): `skein delapp %s %s` first", ws.Name, p.URL, a.Target.Host, a.Target.Port, ws.Name, p.URL)
		}
		if len(ws.Apps) >= MaxApps {
			return workers.Invalid("web server %s publishes %d apps already: at most %d", ws.Name, len(ws.Apps), MaxApps)
		}
		if p.Target.Kind == events.TargetConsul {
			rs, err := w.endpointResolvers(ctx)
			if err != nil {
				return err
			}
			ws.Resolvers = rs
		}
		ws.Apps = append(ws.Apps, events.App{URL: p.URL, Target: p.Target})
		return nil
	})
	if err != nil {
		return ws, err
	}
	if !same {
		t := p.Target
		w.publish(ctx, events.TypeAppPublished, events.AppEvent{WS: ws.Name, URL: p.URL, Target: &t})
		w.publish(ctx, events.TypeWSChanged, events.WSChange{Name: ws.Name, Change: "apps", Apps: len(ws.Apps)})
	}
	return ws, nil
}

// Unpublish removes one app and nothing else.
func (w *Worker) Unpublish(ctx context.Context, req *workers.Request, p events.AppRef) (events.WS, error) {
	ws, err := w.change(ctx, p.WS, func(ws *events.WS) error {
		for i, a := range ws.Apps {
			if a.URL == p.URL {
				ws.Apps = append(ws.Apps[:i:i], ws.Apps[i+1:]...)
				return nil
			}
		}
		var urls []string
		for _, a := range ws.Apps {
			urls = append(urls, a.URL)
		}
		sort.Strings(urls)
		return workers.NotFound("web server %s does not publish %s (it publishes %v): `skein listws` shows them", ws.Name, p.URL, urls)
	})
	if err != nil {
		return ws, err
	}
	w.publish(ctx, events.TypeAppRemoved, events.AppEvent{WS: ws.Name, URL: p.URL})
	w.publish(ctx, events.TypeWSChanged, events.WSChange{Name: ws.Name, Change: "apps", Apps: len(ws.Apps)})
	return ws, nil
}

// change edits a ready web server and makes it run the result before it is
// recorded: the new files are checked by nginx and reloaded gracefully, or the
// previous ones stay (svc.Apply restores them whole).
func (w *Worker) change(ctx context.Context, name string, edit func(*events.WS) error) (events.WS, error) {
	return svc.Change(ctx, w.host, w.kind, name, edit, func(old, next events.WS) (string, error) {
		set, err := files(next)
		if err != nil {
			return "", err
		}
		return svc.Apply(ctx, w.host.Runtime, name, component, set, svc.Reload, old.Applied)
	})
}

// endpointResolvers are the DNS addresses of the ready Consul endpoints.
func (w *Worker) endpointResolvers(ctx context.Context) ([]string, error) {
	return discovery.Resolvers(ctx, w.endpoints)
}

func (w *Worker) publish(ctx context.Context, typ string, payload any) {
	if err := w.cfg.Publisher.Publish(ctx, typ, payload); err != nil {
		w.cfg.Log.Warn().Err(err).Str("type", typ).Msg("publishing event")
	}
}
