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
	"github.com/skeinhq/skein/internal/nginx"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/discovery"
	"github.com/skeinhq/skein/workers/svc"
)

// component is how a web server checks and reloads its files.
var component = svc.Component{Name: "nginx", Unit: "nginx", Check: "nginx -t -q", Before: nginx.Before, Settle: nginx.Settle}

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
	cfg        Config
	host       *svc.Host
	kind       *svc.Kind[events.WS, *events.WS]
	endpoints  *bus.Store[events.Endpoint]
	containers *bus.Store[events.Container]
	kick       chan struct{}
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
	ctrs, err := bus.OpenStore[events.Container](ctx, cfg.JS)
	if err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, host: cfg.Host, endpoints: eps, containers: ctrs, kick: make(chan struct{}, 1)}
	w.kind = &svc.Kind[events.WS, *events.WS]{Noun: "web server", Prefix: "ws", ListCmd: "skein listws", Store: st,
		Gone: func(ctx context.Context, s events.WS) {
			w.publish(ctx, events.TypeWSChanged, events.WSChange{Name: s.Name, Change: "deleted", Apps: len(s.Apps), Cause: "reconcile"})
		},
		Repair: w.repair}
	return w, nil
}

// Register adds the worker's handlers to the runtime, in one visible block.
func (w *Worker) Register(r *workers.Runtime) {
	k := w.kind
	workers.Handle(r, workers.Command[events.WSAdd, events.WS]{Type: events.TypeWSAdd, Lock: func(p events.WSAdd) string { return svc.NameLock(k, p.Name) }, Deadline: 3 * time.Minute, Run: w.Add})
	workers.Handle(r, workers.Command[events.WSRef, events.WS]{Type: events.TypeWSDelete, Lock: func(p events.WSRef) string { return k.Lock(p.Name) }, Run: w.Delete})
	workers.Handle(r, workers.Command[events.AppPublish, events.WS]{Type: events.TypeAppPublish, Lock: func(p events.AppPublish) string { return k.Lock(p.WS) }, Deadline: 3 * time.Minute, Run: w.Publish})
	workers.Handle(r, workers.Command[events.AppRef, events.WS]{Type: events.TypeAppDelete, Lock: func(p events.AppRef) string { return k.Lock(p.WS) }, Run: w.Unpublish})
	workers.Handle(r, workers.Command[events.AppRef, events.WS]{Type: events.TypeAppRenew, Lock: func(p events.AppRef) string { return k.Lock(p.WS) }, Deadline: 3 * time.Minute, Run: w.Renew})
}

// Run repairs the web server records from what runs, follows the containers
// that apps target, and renews certificates before they expire, until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	go w.followContainers(ctx)
	go w.renewLoop(ctx, time.Hour)
	svc.Follow(ctx, w.host, w.kind, w.kick, 30*time.Second)
}

// followContainers re-renders the web servers of this server whose apps
// target a container, whenever that container's address changes.
func (w *Worker) followContainers(ctx context.Context) {
	ch := w.containers.Follow(ctx, ">", func(err error) {
		w.cfg.Log.Warn().Err(err).Msg("watching containers")
	})
	for c := range ch {
		if c.Value != nil && c.Value.IPv4 != "" {
			w.retarget(ctx, c.Value.Name, c.Value.IPv4)
		}
	}
}

// retarget points the apps that target container name at its address ip.
func (w *Worker) retarget(ctx context.Context, name, ip string) {
	all, err := w.kind.Store.ListServer(ctx, w.host.Server)
	if err != nil {
		w.cfg.Log.Warn().Err(err).Msg("listing web servers")
		return
	}
	for _, e := range all {
		if !targets(e.Value, name, ip) {
			continue
		}
		err := w.locked(ctx, e.Value.Name, func() error { return w.pointAt(ctx, e.Value.Name, name, ip, "") })
		if err != nil {
			// The reconciler (repair) tries again within 30 s.
			w.cfg.Log.Warn().Err(err).Str("ws", e.Value.Name).Str("container", name).Msg("following a container's new address")
		}
	}
}

// pointAt points web server wsName's apps that target container name at ip
// and tells it; the web server's lock is held.
func (w *Worker) pointAt(ctx context.Context, wsName, name, ip, cause string) error {
	ws, err := w.change(ctx, wsName, func(ws *events.WS) ([]svc.File, error) {
		for i, a := range ws.Apps {
			if a.Target.Kind == events.TargetContainer && a.Target.Host == name {
				ws.Apps[i].Addr = ip
			}
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	w.cfg.Log.Info().Str("ws", ws.Name).Str("container", name).Str("ip", ip).Str("cause", cause).Msg("apps follow their container to its new address")
	w.publish(ctx, events.TypeWSChanged, events.WSChange{Name: ws.Name, Change: "apps", Apps: len(ws.Apps), Cause: cause})
	return nil
}

// repair points apps at the address their container has now when a move was
// missed (the follower's change failed, or came while the agent was down);
// the reconciler calls it under the web server's lock.
func (w *Worker) repair(ctx context.Context, ws events.WS) error {
	now := map[string]string{}
	for _, a := range ws.Apps {
		if a.Target.Kind != events.TargetContainer {
			continue
		}
		if _, looked := now[a.Target.Host]; !looked {
			e, err := w.containers.FindByName(ctx, a.Target.Host)
			if err != nil {
				return err
			}
			now[a.Target.Host] = ""
			if e != nil {
				now[a.Target.Host] = e.Value.IPv4
			}
		}
	}
	for name, ip := range now {
		if ip == "" || !targets(ws, name, ip) {
			continue // gone or stopped: its app waits for it
		}
		if err := w.pointAt(ctx, ws.Name, name, ip, "reconcile"); err != nil {
			return err
		}
	}
	return nil
}

// targets says whether a ready web server has an app that targets container
// name at another address than ip.
func targets(ws events.WS, name, ip string) bool {
	if ws.Status != events.StatusReady {
		return false
	}
	for _, a := range ws.Apps {
		if a.Target.Kind == events.TargetContainer && a.Target.Host == name && a.Addr != ip {
			return true
		}
	}
	return false
}

// locked runs f under a web server's lock, as its commands run.
func (w *Worker) locked(ctx context.Context, name string, f func() error) error {
	unlock, err := w.host.Locks.Lock(ctx, w.kind.Lock(name))
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

// renewLoop renews, at once and every period, the self-signed and ACME
// certificates of this server's web servers that expire within renewBefore.
func (w *Worker) renewLoop(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		all, err := w.kind.Store.ListServer(ctx, w.host.Server)
		if err != nil {
			w.cfg.Log.Warn().Err(err).Msg("listing web servers")
		}
		for _, e := range all {
			for _, a := range e.Value.Apps {
				if e.Value.Status != events.StatusReady || a.TLS == nil || a.TLS.Kind == events.TLSGiven || a.TLS.Fingerprint == "" || time.Until(a.TLS.NotAfter) > renewBefore {
					continue
				}
				err := w.locked(ctx, e.Value.Name, func() error {
					ws, err := w.renew(ctx, nil, e.Value.Name, a.URL)
					if err == nil {
						w.publishApp(ctx, ws, ws.Apps[appIndex(&ws, a.URL)], true)
					}
					return err
				})
				if err != nil {
					w.cfg.Log.Warn().Err(err).Str("ws", e.Value.Name).Str("url", a.URL).Msg("renewing a certificate")
				} else {
					w.cfg.Log.Info().Str("ws", e.Value.Name).Str("url", a.URL).Msg("renewed a certificate before it expires")
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Gone tells the worker a container is gone: a web server's record may be a ghost now.
func (w *Worker) Gone(string) {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// files is a web server's rendered configuration (certificates apart).
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

// Publish publishes an app by URL, with the TLS asked for. The same app again
// is a no-op; the same URL and target with other TLS (a new -c/-k) replaces
// its certificate; a URL the web server already publishes to another target
// is refused (delapp it first). An ACME app is first served on port 80 with
// the challenge location, then with the certificate obtained; if the order
// fails the app is taken back to what it was.
func (w *Worker) Publish(ctx context.Context, req *workers.Request, p events.AppPublish) (events.WS, error) {
	if err := CheckTarget(p.Target); err != nil {
		return events.WS{}, workers.Invalid("%v", err)
	}
	given, err := w.checkTLSRequest(p.TLS)
	if err != nil {
		return events.WS{}, err
	}
	addr := ""
	if p.Target.Kind == events.TargetContainer {
		if addr, err = w.containerAddr(ctx, p.Target.Host); err != nil {
			return events.WS{}, err
		}
	}
	var prev *events.App // the app as it was, to take an ACME app back to
	same, told := false, false
	ws, err := w.change(ctx, p.WS, func(ws *events.WS) ([]svc.File, error) {
		i := appIndex(ws, p.URL)
		present := i >= 0 && ws.Apps[i].Target == p.Target && sameTLS(ws.Apps[i].TLS, p.TLS, given)
		// An attempt after one whose change landed but whose answer was lost
		// (its record's acknowledgement, say) tells the publication as that
		// one would have: the event is at least once.
		had, err := req.FirstSaw(ctx, "had", present)
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			a := ws.Apps[i]
			if a.Target != p.Target {
				return nil, workers.Conflict("web server %s already publishes %s (to %s:%d): `skein delapp %s %s` first", ws.Name, p.URL, a.Target.Host, a.Target.Port, ws.Name, p.URL)
			}
			if present {
				same, told = true, !had
				return nil, nil
			}
			prev = &a
		} else if len(ws.Apps) >= MaxApps {
			return nil, workers.Invalid("web server %s publishes %d apps already: at most %d", ws.Name, len(ws.Apps), MaxApps)
		}
		if p.Target.Kind == events.TargetConsul {
			rs, err := w.endpointResolvers(ctx)
			if err != nil {
				return nil, err
			}
			ws.Resolvers = rs
		}
		app := events.App{URL: p.URL, Target: p.Target, Addr: addr}
		var files []svc.File
		if p.TLS != nil {
			app.TLS = &events.AppTLS{Kind: p.TLS.Kind, NoRedirect: p.TLS.NoRedirect, HSTS: p.TLS.HSTS, ACMEURL: p.TLS.ACMEURL, ACMERoots: p.TLS.ACMERoots}
			var pair *certPair
			switch p.TLS.Kind {
			case events.TLSGiven:
				pair = given
			case events.TLSSelf:
				leaf, ca, caFiles, err := w.selfSigned(ctx, ws.Name, ws.CA, p.URL)
				if err != nil {
					return nil, err
				}
				ws.CA, pair, files = ca, &leaf, caFiles
			case events.TLSACME:
				// Kept while the same directory's certificate is renewed below.
				if prev != nil && prev.TLS != nil && prev.TLS.Kind == events.TLSACME && prev.TLS.ACMEURL == p.TLS.ACMEURL {
					app.TLS.Fingerprint, app.TLS.NotAfter = prev.TLS.Fingerprint, prev.TLS.NotAfter
				}
			}
			if pair != nil {
				fp, notAfter, err := pair.identity()
				if err != nil {
					return nil, workers.Invalid("the certificate and key do not make a pair: %v", err)
				}
				app.TLS.Fingerprint, app.TLS.NotAfter = fp, notAfter
				files = append(files, certFiles(p.URL, *pair)...)
			}
		} else if prev != nil && prev.TLS != nil {
			files = removeCertFiles(p.URL)
		}
		if i >= 0 {
			ws.Apps[i] = app
		} else {
			ws.Apps = append(ws.Apps, app)
		}
		return files, nil
	})
	if err == nil && told {
		w.publishApp(ctx, ws, ws.Apps[appIndex(&ws, p.URL)], false)
	}
	if err != nil || same {
		return ws, err
	}
	if p.TLS != nil && p.TLS.Kind == events.TLSACME && ws.Apps[appIndex(&ws, p.URL)].TLS.Fingerprint == "" {
		if ws, err = w.renew(ctx, req, p.WS, p.URL); err != nil {
			w.takeBack(ctx, p.WS, p.URL, prev)
			return ws, err
		}
	}
	a := ws.Apps[appIndex(&ws, p.URL)]
	w.publishApp(ctx, ws, a, false)
	return ws, nil
}

// takeBack puts an app back as it was before a publication that failed half
// way (an ACME order that did not complete): removed if it was not there.
func (w *Worker) takeBack(ctx context.Context, name, url string, prev *events.App) {
	ctx = context.WithoutCancel(ctx)
	_, err := w.change(ctx, name, func(ws *events.WS) ([]svc.File, error) {
		i := appIndex(ws, url)
		if i < 0 {
			return nil, nil
		}
		if prev != nil {
			ws.Apps[i] = *prev
		} else {
			ws.Apps = append(ws.Apps[:i:i], ws.Apps[i+1:]...)
		}
		return nil, nil
	})
	if err != nil {
		w.cfg.Log.Error().Err(err).Str("ws", name).Str("url", url).Msg("taking back an app whose certificate could not be had")
	}
}

// publishApp tells an app's publication or renewal.
func (w *Worker) publishApp(ctx context.Context, ws events.WS, a events.App, renewed bool) {
	t := a.Target
	ev := events.AppEvent{WS: ws.Name, URL: a.URL, Target: &t, Renewed: renewed}
	if a.TLS != nil {
		ev.TLS, ev.Fingerprint = a.TLS.Kind, a.TLS.Fingerprint
	}
	w.publish(ctx, events.TypeAppPublished, ev)
	w.publish(ctx, events.TypeWSChanged, events.WSChange{Name: ws.Name, Change: "apps", Apps: len(ws.Apps)})
}

// Renew renews an app's self-signed or ACME certificate now: the new one is
// installed and reloaded gracefully (requests in flight finish on the old).
func (w *Worker) Renew(ctx context.Context, req *workers.Request, p events.AppRef) (events.WS, error) {
	ws, err := w.renew(ctx, req, p.WS, p.URL)
	if err != nil {
		return ws, err
	}
	w.publishApp(ctx, ws, ws.Apps[appIndex(&ws, p.URL)], true)
	return ws, nil
}

// renew gets a new certificate for an app and makes the web server serve it.
// The certificate is had before the record is read for the change: an ACME
// order takes seconds and the app may not change meanwhile (the caller holds
// the web server's lock).
func (w *Worker) renew(ctx context.Context, req *workers.Request, name, url string) (events.WS, error) {
	e, err := w.kind.Store.Find(ctx, bus.Key(w.host.Server, name))
	if err != nil || e == nil {
		return events.WS{}, workers.NotFound("no web server named %s on server %s: `skein listws` shows them", name, w.host.Server)
	}
	i := appIndex(&e.Value, url)
	if i < 0 {
		return events.WS{}, notPublished(&e.Value, url)
	}
	a := e.Value.Apps[i]
	if a.TLS == nil {
		return events.WS{}, errNoTLS(name, url)
	}
	pair, ca, caFiles, err := w.certFor(ctx, req, e.Value, a)
	if err != nil {
		return events.WS{}, err
	}
	fp, notAfter, err := pair.identity()
	if err != nil {
		return events.WS{}, workers.Invalid("the new certificate of %s: %v", url, err)
	}
	return w.change(ctx, name, func(ws *events.WS) ([]svc.File, error) {
		i := appIndex(ws, url)
		if i < 0 || ws.Apps[i].TLS == nil || ws.Apps[i].TLS.Kind != a.TLS.Kind {
			return nil, workers.Conflict("app %s of web server %s changed while its certificate was renewed: try again", url, name)
		}
		if ca != "" {
			ws.CA = ca
		}
		ws.Apps[i].TLS.Fingerprint, ws.Apps[i].TLS.NotAfter = fp, notAfter
		return append(caFiles, certFiles(url, pair)...), nil
	})
}

// Unpublish removes one app (and its certificate) and nothing else.
func (w *Worker) Unpublish(ctx context.Context, req *workers.Request, p events.AppRef) (events.WS, error) {
	ws, err := w.change(ctx, p.WS, func(ws *events.WS) ([]svc.File, error) {
		i := appIndex(ws, p.URL)
		// An attempt after one whose removal landed but whose result was lost
		// (its agent killed) answers as that one would have, not "does not
		// publish" (found by the soak on the NATS cluster).
		first, err := req.FirstSaw(ctx, "found", i >= 0)
		if err != nil {
			return nil, err
		}
		if i < 0 && first {
			return nil, svc.ErrDoneBefore // its events again below: at least once
		}
		if i < 0 {
			return nil, notPublished(ws, p.URL)
		}
		var files []svc.File
		if ws.Apps[i].TLS != nil {
			files = removeCertFiles(p.URL)
		}
		ws.Apps = append(ws.Apps[:i:i], ws.Apps[i+1:]...)
		return files, nil
	})
	if err != nil {
		return ws, err
	}
	w.publish(ctx, events.TypeAppRemoved, events.AppEvent{WS: ws.Name, URL: p.URL})
	w.publish(ctx, events.TypeWSChanged, events.WSChange{Name: ws.Name, Change: "apps", Apps: len(ws.Apps)})
	return ws, nil
}

// appIndex is the index of url's app in ws, -1 when it publishes none.
func appIndex(ws *events.WS, url string) int {
	for i, a := range ws.Apps {
		if a.URL == url {
			return i
		}
	}
	return -1
}

// notPublished is the answer about a URL the web server does not publish.
func notPublished(ws *events.WS, url string) error {
	urls := []string{}
	for _, a := range ws.Apps {
		urls = append(urls, a.URL)
	}
	sort.Strings(urls)
	return workers.NotFound("web server %s does not publish %s (it publishes %v): `skein listws` shows them", ws.Name, url, urls)
}

// sameTLS says whether an app's TLS already is what a request asks (a given
// pair by its fingerprint), so that publishing it again changes nothing.
func sameTLS(cur *events.AppTLS, req *events.AppTLSRequest, given *certPair) bool {
	if cur == nil || req == nil {
		return cur == nil && req == nil
	}
	if cur.Kind != req.Kind || cur.NoRedirect != req.NoRedirect || cur.HSTS != req.HSTS || cur.ACMEURL != req.ACMEURL || cur.ACMERoots != req.ACMERoots {
		return false
	}
	switch cur.Kind {
	case events.TLSGiven:
		fp, _, err := given.identity()
		return err == nil && fp == cur.Fingerprint
	case events.TLSACME:
		return cur.Fingerprint != ""
	}
	return true
}

// checkTLSRequest refuses TLS that does not fit its kind and opens a given
// pair's key (sealed to this agent), checking that it is the certificate's.
func (w *Worker) checkTLSRequest(t *events.AppTLSRequest) (*certPair, error) {
	if t == nil {
		return nil, nil
	}
	if (t.Pair != nil) != (t.Kind == events.TLSGiven) {
		return nil, workers.Invalid("a certificate and key go with TLS kind given (-c/-k) only")
	}
	if (t.ACMEURL != "") != (t.Kind == events.TLSACME) || (t.ACMERoots != "" && t.Kind != events.TLSACME) {
		return nil, workers.Invalid("an ACME directory goes with TLS kind acme (--acme) only, and acme needs one")
	}
	switch t.Kind {
	case events.TLSSelf, events.TLSACME:
		return nil, nil
	case events.TLSGiven:
	default:
		return nil, workers.Invalid("TLS kind %q: want given, self or acme", t.Kind)
	}
	if w.host.Secrets == nil {
		return nil, workers.Internal("this agent cannot open sealed secrets")
	}
	key, err := w.host.Secrets.Open(t.Pair.Key)
	if err != nil {
		return nil, workers.Invalid("the TLS key: %v", err)
	}
	p := &certPair{cert: []byte(t.Pair.Cert), key: key}
	if _, _, err := p.identity(); err != nil {
		return nil, workers.Invalid("the certificate and key do not make a pair: %v", err)
	}
	return p, nil
}

// containerAddr is the IPv4 address a container has now.
func (w *Worker) containerAddr(ctx context.Context, name string) (string, error) {
	e, err := w.containers.FindByName(ctx, name)
	if err != nil {
		return "", workers.Transient("reading container %s: %v", name, err)
	}
	if e == nil {
		return "", workers.NotFound("no container named %s: `skein list` shows them", name)
	}
	if e.Value.IPv4 == "" {
		return "", workers.Invalid("container %s has no IPv4 address now (status %s): start it first", name, e.Value.Status)
	}
	return e.Value.IPv4, nil
}

// change edits a ready web server and makes it run the result before it is
// recorded: the new files (with the certificates edit places or removes) are
// checked by nginx and reloaded gracefully, or the previous ones stay whole
// (svc.Apply restores them).
func (w *Worker) change(ctx context.Context, name string, edit func(*events.WS) ([]svc.File, error)) (events.WS, error) {
	var extra []svc.File
	return svc.Change(ctx, w.host, w.kind, name, func(ws *events.WS) error {
		var err error
		extra, err = edit(ws)
		return err
	}, func(old, next events.WS) (string, error) {
		set, err := files(next)
		if err != nil {
			return "", err
		}
		return svc.Apply(ctx, w.host.Runtime, name, component, append(set, extra...), svc.Reload, old.Applied)
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
