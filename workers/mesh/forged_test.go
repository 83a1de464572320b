package mesh

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// TestAForgedPeerKeyIsRefused (issue 22): agent w3 has the bus's server
// store, as w2's heartbeat, one with w3's own WireGuard key and endpoint,
// signed by w3's credentials. w1's mesh, on a bus with credentials, keeps
// w2's tunnel to w2's real endpoint and says why it ignored the forgery.
func TestAForgedPeerKeyIsRefused(t *testing.T) {
	_, url, a := testutil.AuthBus(t)
	w1c := testutil.Connect(t, url, a, bus.Role{Kind: "agent", Server: "w1"})
	w2c := testutil.Connect(t, url, a, bus.Role{Kind: "agent", Server: "w2"})
	w3c := testutil.Connect(t, url, a, bus.Role{Kind: "agent", Server: "w3"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(c *bus.Conn) *bus.Store[events.Heartbeat] {
		st, err := bus.OpenStore[events.Heartbeat](ctx, c.JS)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	var log testutil.LogBuffer
	r := &fakeRouter{addrs: wgHost, others: []netip.Prefix{pfx("198.51.100.0/24"), pfx("10.77.1.0/24")}}
	w := newWGWorker(r, &fakeTunnel{})
	w.cfg.Heartbeats, w.cfg.Log = open(w1c), zerolog.New(&log)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(rctx) }()
	defer func() { stop(); <-done }()

	beatNow := func(name, endpoint string, k byte) events.Heartbeat {
		hb := wgBeat(name, strings.Split(endpoint, ":")[0], "10.77."+string('0'+k)+".0/24", pub(k).String(), endpoint)
		hb.Time = time.Now().UTC()
		return hb
	}
	endpointOf := func(name string) string {
		for _, p := range w.Status().Peers {
			if p.Name == name {
				return p.Endpoint
			}
		}
		return ""
	}
	if _, err := open(w2c).Put(ctx, "w2", beatNow("w2", "203.0.113.2:51820", 2)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return endpointOf("w2") == "203.0.113.2:51820" }, "w2 never became a peer")

	// w3's own heartbeat, stored under w3's key and signed by w3, renamed
	// w2 and with w3's key, then had stored as w2's.
	forged := beatNow("w2", "203.0.113.9:51820", 9)
	if _, err := open(w3c).Put(ctx, "w3", beatNow("w3", "203.0.113.3:51820", 3)); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(forged)
	m := nats.NewMsg("$KV.skein_adhoc.w3.forge")
	m.Data = raw
	if _, err := w3c.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]string{"last_by_subj": m.Subject})
	if err := w3c.NC.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET.KV_skein_adhoc", Reply: "$KV.skein_servers.w2", Data: req}); err != nil {
		t.Fatal(err)
	}
	// Heartbeats are watched in order: once w3's next one is seen, so was the forgery.
	if _, err := open(w3c).Put(ctx, "w3", beatNow("w3", "203.0.113.33:51820", 3)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return endpointOf("w3") == "203.0.113.33:51820" }, "w3's second heartbeat was never seen")
	if got := endpointOf("w2"); got != "203.0.113.2:51820" {
		t.Errorf("w2's tunnel goes to %q, want its own endpoint", got)
	}
	if !strings.Contains(log.String(), "not signed by its server's agent") {
		t.Errorf("the forgery was ignored without a word: %s", log.String())
	}
}
