package discovery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
)

// notRun is the output of a check that has not run yet.
const notRun = "not run yet"

// checkState is the last result of one check of one container.
type checkState struct {
	def     events.CheckDef
	address string // the node's address when the state was made
	status  string
	output  string
	next    time.Time
	running bool
	ran     bool
}

// knownCheck is a check as the catalog had it when the worker started.
type knownCheck struct {
	address string // its node's address
	check   consul.Check
}

// checkState returns the state of a check of a node at address. A new state
// starts from the status the catalog had for that very check when the worker
// started (an agent restart keeps passing checks passing); a check the catalog
// did not have starts critical until it first runs, as Consul does. Called
// with w.mu held.
func (w *Worker) checkState(node, address string, def events.CheckDef) *checkState {
	key := node + "/" + def.Name
	st, ok := w.checks[key]
	if !ok || st.def != def {
		st = &checkState{def: def, address: address, status: "critical", output: notRun}
		w.fromCatalog(key, st)
		w.checks[key] = st
	}
	return st
}

// fromCatalog gives a state that has not run the status the catalog had at
// start for the same check: same node address, id and definition. Each known
// status is used once. Called with w.mu held.
func (w *Worker) fromCatalog(key string, st *checkState) {
	k, ok := w.known[key]
	if !ok || st.ran {
		return
	}
	delete(w.known, key)
	if k.address == st.address && sameDefinition(k.check, catalogCheck(st.def, st.address)) {
		st.status, st.output = k.check.Status, k.check.Output
	}
}

// sameDefinition tells whether two catalog checks describe the same check,
// whatever the spelling of their durations ("1m" is read back as "1m0s").
func sameDefinition(a, b consul.Check) bool {
	sameDur := func(x, y string) bool {
		dx, errx := time.ParseDuration(x)
		dy, erry := time.ParseDuration(y)
		return x == y || (errx == nil && erry == nil && dx == dy)
	}
	return a.ID == b.ID && a.TCP == b.TCP && a.HTTP == b.HTTP && a.TLSSkipVerify == b.TLSSkipVerify && sameDur(a.Interval, b.Interval) && sameDur(a.Timeout, b.Timeout)
}

// seed reads, once, the checks the catalog has for this server's nodes, so that
// the states made from now on, and those made before that have not run yet,
// start from them.
func (w *Worker) seed(ctx context.Context) error {
	w.mu.Lock()
	done := w.seeded
	w.mu.Unlock()
	if done {
		return nil
	}
	nodes, err := w.catalog.NodeChecks(ctx, map[string]string{consul.MetaServer: w.host.Server})
	if err != nil {
		return err
	}
	known := map[string]knownCheck{}
	for _, n := range nodes {
		for _, c := range n.Checks {
			if name, ok := strings.CutPrefix(c.ID, "skein:"); ok {
				known[n.Name+"/"+name] = knownCheck{address: n.Address, check: c}
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.known, w.seeded = known, true
	for key, st := range w.checks {
		w.fromCatalog(key, st)
	}
	return nil
}

// runChecks runs every due check of the containers that are published.
func (w *Worker) runChecks(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		w.mu.Lock()
		live := map[string]bool{}
		for _, t := range w.targets() {
			for _, def := range t.checks {
				key := t.node + "/" + def.Name
				live[key] = true
				st := w.checkState(t.node, t.address, def)
				if st.running || now.Before(st.next) {
					continue
				}
				st.running = true
				iv, _ := time.ParseDuration(def.Interval)
				st.next = now.Add(iv)
				go w.runCheck(ctx, t.node, key, def, checkHost(def, t.address))
			}
		}
		for key := range w.checks {
			if !live[key] {
				delete(w.checks, key)
			}
		}
		var changed []events.Health
		var gone []string
		if len(w.loaded) >= followed {
			w.host.Health.Set(w.localHealth())
			changed, gone = w.healthChanges()
		}
		w.mu.Unlock()
		w.writeHealth(ctx, changed, gone)
	}
}

// healthChanges are the published containers whose health differs from what
// the health bucket was last given, and those no longer published. Called
// with w.mu held.
func (w *Worker) healthChanges() (changed []events.Health, gone []string) {
	live := map[string]bool{}
	for _, t := range w.targets() {
		if t.kind != "container" {
			continue
		}
		live[t.node] = true
		h := events.Health{Container: t.node, Server: w.host.Server, Passing: true, Checks: map[string]string{}}
		for _, def := range t.checks {
			st := w.checks[t.node+"/"+def.Name]
			status := "critical"
			if st != nil {
				status = st.status
			}
			h.Checks[def.Name] = status
			h.Passing = h.Passing && status == "passing"
		}
		if fp := fmt.Sprint(h.Passing, h.Checks); w.healthTold[t.node] != fp {
			w.healthTold[t.node] = fp
			changed = append(changed, h)
		}
	}
	for node := range w.healthTold {
		if !live[node] {
			delete(w.healthTold, node)
			gone = append(gone, node)
		}
	}
	return changed, gone
}

// writeHealth writes health changes to the bucket; a failed write is
// forgotten so that the next pass writes it again.
func (w *Worker) writeHealth(ctx context.Context, changed []events.Health, gone []string) {
	for _, h := range changed {
		h.Updated = time.Now().UTC()
		if _, err := w.health.Put(ctx, bus.Key(w.host.Server, h.Container), h); err != nil {
			w.mu.Lock()
			delete(w.healthTold, h.Container)
			w.mu.Unlock()
		}
	}
	for _, node := range gone {
		_ = w.health.Delete(ctx, bus.Key(w.host.Server, node), 0)
	}
}

// localHealth says, for each service with an instance on this server, whether
// one of them passes all its checks (one without checks passes while it runs).
// Called with w.mu held.
func (w *Worker) localHealth() map[string]bool {
	up := map[string]bool{}
	for _, t := range w.targets() {
		ok := true
		for _, def := range t.checks {
			if st := w.checks[t.node+"/"+def.Name]; st == nil || st.status != "passing" {
				ok = false
			}
		}
		for _, s := range t.services {
			up[s.Name] = up[s.Name] || ok
		}
	}
	return up
}

func (w *Worker) runCheck(ctx context.Context, container, key string, def events.CheckDef, addr string) {
	status, output := probe(ctx, def, addr)
	w.mu.Lock()
	st, ok := w.checks[key]
	// The first result is told too: it replaces the "not run yet" placeholder.
	changed := ok && (st.status != status || !st.ran)
	if ok {
		st.ran = true
		st.running = false
		st.status, st.output = status, output
	}
	w.mu.Unlock()
	if changed {
		w.publish(ctx, events.TypeCheckStatus, events.CheckStatus{Container: container, Check: def.Name, Status: status, Output: output})
		w.poked()
	}
}

// probe runs one check against a container at addr.
func probe(ctx context.Context, def events.CheckDef, addr string) (status, output string) {
	timeout, _ := time.ParseDuration(def.Timeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch def.Kind {
	case "tcp":
		target := net.JoinHostPort(addr, fmt.Sprint(def.Port))
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
		if err != nil {
			return "critical", fmt.Sprintf("TCP connect %s: %v", target, err)
		}
		c.Close()
		return "passing", "TCP connect " + target + ": Success"
	case "http":
		target, dial, err := httpTarget(def.URL, addr)
		if err != nil {
			return "critical", err.Error()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return "critical", err.Error()
		}
		resp, err := checkClient(dial, def.TLSSkipVerify).Do(req)
		if err != nil {
			return "critical", httpFailure(def.URL, err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return "passing", fmt.Sprintf("HTTP GET %s: %s", def.URL, resp.Status)
		}
		return "critical", fmt.Sprintf("HTTP GET %s: %s", def.URL, resp.Status)
	}
	return "critical", "unknown check kind " + def.Kind
}

// checkRoots are the CAs that https checks trust: nil is the system's (tests set their own).
var checkRoots *x509.CertPool

// checkClient makes the client of one http check run: it connects to dial
// whatever the URL's host, so the URL's host name stays the Host header and, for
// https, the server name sent (SNI) and verified against the certificate. It
// follows no redirects and keeps no connections: a check is one request.
func checkClient(dial string, skipVerify bool) *http.Client {
	d := &net.Dialer{}
	return &http.Client{
		Transport: &http.Transport{
			DisableKeepAlives: true,
			Proxy:             nil,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, dial)
			},
			TLSClientConfig: &tls.Config{RootCAs: checkRoots, InsecureSkipVerify: skipVerify},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// httpFailure is the output of a request that got no response: the cause, and
// for a certificate that does not verify, what to do about it.
func httpFailure(rawURL string, err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // it repeats the method and URL
	}
	out := fmt.Sprintf("HTTP GET %s: %v", rawURL, err)
	var ve *tls.CertificateVerificationError
	if errors.As(err, &ve) {
		out += " (trust its CA on the server, or add the check with --tls-skip-verify)"
	}
	return out
}

// httpTarget turns a check's URL into the URL to fetch and the address to
// connect to. A path is fetched from the container; a URL whose host is an
// address from that address; a URL whose host is a name ("mywordpress.org", as
// in `addcheck c1 web http mywordpress.org`) from the container itself, the
// URL kept as it is so that the name is the Host header and the TLS server name.
func httpTarget(raw, addr string) (target, dial string, err error) {
	if strings.HasPrefix(raw, "/") {
		raw = "http://" + addr + raw
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", "", fmt.Errorf("bad check URL %q: want http(s)://HOST[:PORT]/PATH or /PATH", raw)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	host := u.Hostname()
	if net.ParseIP(host) == nil {
		host = addr
	}
	return u.String(), net.JoinHostPort(host, port), nil
}
