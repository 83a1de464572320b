package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// TestStateAndStream: /api/state has every record (sealed secrets left out);
// /api/stream sends each record change and each event as it happens; the
// page and its files are served; anything else is a plain 404.
func TestStateAndStream(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctrs, err := bus.OpenStore[events.Container](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctrs.Put(ctx, bus.Key("s1", "web1"), events.Container{Name: "web1", Server: "s1", Status: "Running", Updated: time.Now()}); err != nil {
		t.Fatal(err)
	}
	dbs, err := bus.OpenStore[events.DBInstance](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	db := events.DBInstance{Resource: events.Resource{Name: "my1", Server: "s1", Status: events.StatusReady}, Kind: "mysql", Port: 3306, Allow: []string{},
		Databases: []events.DBDatabase{{Name: "app", Owner: "u1"}}, Users: []events.DBUser{{Name: "u1", Password: events.Sealed{Sender: "XBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", Box: "c2VjcmV0"}}}}
	if _, err := dbs.Put(ctx, bus.Key("s1", "my1"), db); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(conn.JS, zerolog.Nop()))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var state map[string]map[string]json.RawMessage
	if err := json.Unmarshal(body, &state); err != nil {
		t.Fatalf("/api/state: %v\n%s", err, body)
	}
	if !strings.Contains(string(state["skein_containers"]["s1.web1"]), `"status":"Running"`) {
		t.Errorf("/api/state containers: %s", state["skein_containers"])
	}
	if got := string(state["skein_dbs"]["s1.my1"]); !strings.Contains(got, `"u1"`) || strings.Contains(got, "c2VjcmV0") || strings.Contains(got, "password") {
		t.Errorf("a sealed password reached the page, or the user did not: %s", got)
	}

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	req, _ := http.NewRequestWithContext(sctx, "GET", srv.URL+"/api/stream", nil)
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	if ct := sresp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("/api/stream Content-Type %q", ct)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(sresp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if l := <-lines; l != ": skein" {
		t.Fatalf("first line %q", l)
	}
	// A change and an event after the page connected both arrive.
	start := time.Now()
	if _, err := ctrs.Put(ctx, bus.Key("s1", "web1"), events.Container{Name: "web1", Server: "s1", Status: "Stopped", Updated: time.Now()}); err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(conn.JS, "agent/s1", "s1")
	if err := pub.Publish(ctx, events.TypeContainerStopped, events.ContainerEvent{Name: "web1", Status: "Stopped", Cause: "incus"}); err != nil {
		t.Fatal(err)
	}
	var sawRecord, sawEvent bool
	kind := ""
	for !(sawRecord && sawEvent) {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the stream ended")
			}
			switch {
			case strings.HasPrefix(l, "event: "):
				kind = strings.TrimPrefix(l, "event: ")
			case strings.HasPrefix(l, "data: ") && kind == "record":
				sawRecord = sawRecord || strings.Contains(l, `"bucket":"skein_containers"`) && strings.Contains(l, `"status":"Stopped"`)
			case strings.HasPrefix(l, "data: ") && kind == "event":
				sawEvent = sawEvent || strings.Contains(l, `"type":"container.stopped"`)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("after 5 s: record %v, event %v", sawRecord, sawEvent)
		}
	}
	t.Logf("change and event on the stream %s after the write", time.Since(start).Round(time.Millisecond))

	for path, want := range map[string]int{"/": 200, "/static/app.js": 200, "/static/style.css": 200, "/nope": 404, "/static/nope.js": 404} {
		r, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != want || strings.Contains(string(b), "goroutine") {
			t.Errorf("GET %s: %d, want %d", path, r.StatusCode, want)
		}
		if path == "/" && !strings.Contains(string(b), "<title>skein</title>") {
			t.Errorf("GET / is not the page: %.200s", b)
		}
	}
}

// TestServeBeyondLoopbackNeedsLogin: beyond loopback the dashboard is
// refused without the login and TLS, with the fix.
func TestServeBeyondLoopbackNeedsLogin(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8474", "10.1.2.3:8474", ":8474"} {
		if _, err := Serve(context.Background(), Options{Addr: addr, Log: zerolog.Nop()}); err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("Serve(%s) = %v, want a refusal naming 127.0.0.1", addr, err)
		}
	}
	if _, err := Serve(context.Background(), Options{Addr: "nonsense", Log: zerolog.Nop()}); err == nil {
		t.Error("Serve(nonsense) started")
	}
}

// Every sealed secret is dropped by its type, whatever its field is called
// (an endpoint's management token, a user's password, one in a list); a
// field that only shares a name with one is kept.
func TestRedactDropsSealedSecretsByType(t *testing.T) {
	raw := []byte(`{"name":"ep1","management":{"sender":"XABC","box":"c2VjcmV0"},
		"users":[{"name":"u1","password":{"sender":"XDEF","box":"cGFzcw=="}},{"name":"u2","password":{}}],
		"keys":[{"sender":"X1","box":"Ym94"}],"key":"not-a-secret","box":{"box":"b","size":3}}`)
	got := string(redact(raw))
	for _, secret := range []string{"c2VjcmV0", "cGFzcw==", "Ym94", "XABC", "XDEF"} {
		if strings.Contains(got, secret) {
			t.Errorf("%s is still in %s", secret, got)
		}
	}
	for _, kept := range []string{`"name":"ep1"`, `"key":"not-a-secret"`, `"size":3`, `"name":"u2"`, `"keys":[]`} {
		if !strings.Contains(got, kept) {
			t.Errorf("%s was dropped from %s", kept, got)
		}
	}
}

// TestStateShowsOnlyWhatItsWriterSigned: on a bus with credentials, a record
// stored under s2's key by another server (a copy of s1's heartbeat, had
// stored there by a direct get's reply) is not shown; s2's own is, without
// its signature.
func TestStateShowsOnlyWhatItsWriterSigned(t *testing.T) {
	admin, url, a := testutil.AuthBus(t)
	s1 := testutil.Connect(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := testutil.Connect(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	put := func(c *bus.Conn, name string) {
		st, err := bus.OpenStore[events.Heartbeat](ctx, c.JS)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, name, events.Heartbeat{Name: name, Status: "up", Time: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	put(s1, "s1")
	put(s2, "s2")
	state := func() map[string]json.RawMessage {
		srv := httptest.NewServer(Handler(admin.JS, zerolog.Nop()))
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/api/state")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st map[string]map[string]json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st["skein_servers"]
	}
	if got := state(); got["s2"] == nil || strings.Contains(string(got["s2"]), "sig") {
		t.Fatalf("s2's own heartbeat: %s", got["s2"])
	}
	// s1's heartbeat, signed by s1, had stored as s3's: the dashboard read
	// records raw, and showed it.
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV.skein_servers.s1"})
	if err := s1.NC.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET.KV_skein_servers", Reply: "$KV.skein_servers.s3", Data: req}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		m, err := bus.LastStored(ctx, admin.NC, "KV_skein_servers", "$KV.skein_servers.s3")
		return err == nil && m != nil
	}, "the copy was never stored")
	if got := state(); got["s3"] != nil {
		t.Errorf("the dashboard shows a heartbeat of s3 that s3 never sent: %s", got["s3"])
	}
}
