// Package dashboard serves skein's live web dashboard: static files embedded
// in the binary (no build step), a snapshot of the records (/api/state) and
// a stream of every change as it happens (/api/stream, server-sent events):
// the events stream and the records' buckets. The page is one more
// subscriber; it never polls the whole state.
package dashboard

import (
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/httpd"
)

//go:embed static
var static embed.FS

// Buckets are the records the dashboard shows.
var Buckets = []string{"skein_servers", "skein_containers", "skein_services", "skein_health", "skein_endpoints",
	"skein_lbs", "skein_ws", "skein_dbs", "skein_vips", "skein_jobs"}

// Handler serves the dashboard from js.
func Handler(js jetstream.JetStream, log zerolog.Logger) http.Handler {
	d := &dash{js: js, log: log, hub: &hub{js: js}}
	files, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/state", d.state)
	mux.HandleFunc("GET /api/stream", d.stream)
	fileServer := http.FileServerFS(files)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { fileServer.ServeHTTP(w, r) })
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		http.StripPrefix("/static/", fileServer).ServeHTTP(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		page(w, http.StatusNotFound, "Not found", `No such page: the dashboard is at / (<a href="/">open it</a>).`)
	})
	return mux
}

type dash struct {
	js  jetstream.JetStream
	log zerolog.Logger
	hub *hub
}

// record is one record as the page gets it; Value is nil for a deletion.
type record struct {
	Bucket string          `json:"bucket"`
	Key    string          `json:"key"`
	Value  json.RawMessage `json:"value"`
}

// state answers every shown record: bucket → key → value.
func (d *dash) state(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	out := map[string]map[string]json.RawMessage{}
	for _, b := range Buckets {
		out[b] = map[string]json.RawMessage{}
		kv, err := d.js.KeyValue(ctx, b)
		if err != nil {
			continue // a bucket not made yet: nothing of that kind
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			http.Error(w, "reading the records: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		for k := range lister.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				continue // deleted meanwhile
			}
			// Only what its writer may write: another server can have a forged
			// copy stored under a server's key.
			v, err := bus.CheckedRecord(d.js.Conn(), b, k, e.Value(), e.Created())
			if err != nil {
				continue
			}
			out[b][k] = redact(v)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(out)
}

// stream sends, as server-sent events, every record change ("record") and
// every event ("event") from now on, until the page goes.
func (d *dash) stream(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	changes, leave, err := d.hub.join()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer leave()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(": skein\n\n"))
	flusher.Flush()
	beat := time.NewTicker(15 * time.Second)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case b, ok := <-changes:
			if !ok {
				// The following broke (its bus connection lost) or the page fell
				// behind: the page reconnects and reloads the records rather
				// than silently missing some.
				return
			}
			if _, err := w.Write(b); err != nil {
				return
			}
			flusher.Flush()
		case <-beat.C:
			_, _ = w.Write([]byte(": beat\n\n"))
			flusher.Flush()
		}
	}
}

// redact drops sealed secrets from a record before it leaves for a browser:
// every value of a sealed box's type (events.Sealed: an object of a sender
// and a box), whatever its field is called.
func redact(raw []byte) json.RawMessage {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return json.RawMessage("null")
	}
	v = strip(v)
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

func strip(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if sealed(c) {
				delete(x, k)
				continue
			}
			x[k] = strip(c)
		}
	case []any:
		out := x[:0]
		for _, c := range x {
			if !sealed(c) {
				out = append(out, strip(c))
			}
		}
		return out
	}
	return v
}

// sealed says whether v is a sealed secret as JSON: an object whose fields
// are events.Sealed's (sender, box) with a box.
func sealed(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	if _, ok := m["box"]; !ok {
		return false
	}
	for k := range m {
		if k != "box" && k != "sender" {
			return false
		}
	}
	return true
}

// Options are how the dashboard is served.
type Options struct {
	// Addr is HOST:PORT to listen on.
	Addr string
	// JS reads the records and events.
	JS jetstream.JetStream
	// Log gets the logins and errors.
	Log zerolog.Logger
	// Auth checks logins; beyond loopback it and TLS are required.
	Auth Verifier
	// UsedLogins is the file that keeps the login links used, until they
	// expire, across restarts.
	UsedLogins string
	// TLS makes the certificate served beyond loopback, for the host listened on.
	TLS func(host string) (*tls.Config, error)
	// Names are the addresses (HOST or HOST:PORT) the dashboard answers to
	// beyond loopback; default: Addr's host, or, when it is unspecified
	// (0.0.0.0), this machine's addresses; and its host name.
	Names []string
}

// names are the addresses a dashboard listening on host:port answers to.
func names(given []string, host string, port int) []string {
	p := strconv.Itoa(port)
	hosts := given
	if len(hosts) == 0 {
		hosts = []string{host}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			hosts = nil
			addrs, _ := net.InterfaceAddrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
					hosts = append(hosts, n.IP.String())
				}
			}
		}
		if h, err := os.Hostname(); err == nil {
			hosts = append(hosts, h)
		}
	}
	var out []string
	for _, h := range hosts {
		if _, _, err := net.SplitHostPort(h); err == nil {
			out = append(out, h)
		} else {
			out = append(out, net.JoinHostPort(h, p))
		}
	}
	return out
}

// Serve serves the dashboard until ctx ends and returns its URL. On loopback
// it is open, over HTTP; beyond, it is served over TLS to logged-in users.
func Serve(ctx context.Context, o Options) (string, error) {
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return "", fmt.Errorf("want HOST:PORT, e.g. 127.0.0.1:8474")
	}
	open := bus.Loopback(host)
	if !open && (o.Auth == nil || o.TLS == nil) {
		return "", errors.New("beyond loopback the dashboard needs its login and TLS, which only skein server (with the bus's authority) gives: listen on 127.0.0.1 and reach it through an SSH tunnel")
	}
	var conf *tls.Config
	if !open {
		if conf, err = o.TLS(host); err != nil {
			return "", err
		}
	}
	l, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return "", err
	}
	h, scheme := Handler(o.JS, o.Log), "http"
	if !open {
		h, scheme = Guard(h, o.Auth, names(o.Names, host, l.Addr().(*net.TCPAddr).Port), o.UsedLogins, o.Log), "https"
		l = tls.NewListener(l, conf)
	}
	httpd.Serve(ctx, l, h, o.Log, "dashboard")
	url := scheme + "://" + l.Addr().String() + "/"
	o.Log.Info().Str("url", url).Bool("login", !open).Msg("dashboard")
	return url, nil
}
