package bus_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// TestAServersRecordsSurviveAForgedDeletion (issue 23, attack 4): agent s1
// has the bus's server store deletion markers under s2's container key (a
// marker of its own replayed there: unsigned, s1's genuine deletion of its
// own record, one signed by s1 naming s2's key). What the admin follows
// never sees s2's container deleted, and s2's agent (Keep) puts its record
// back: the admin reads it as s2 wrote it. s2's own deletion still deletes,
// and stays.
func TestAServersRecordsSurviveAForgedDeletion(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 90*time.Second)
	open := func(c *bus.Conn) *bus.Store[events.Container] {
		st, err := bus.OpenStore[events.Container](ctx, c.JS)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	var mu sync.Mutex
	var reports []string
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	bus.Keep(kctx, s2.JS, "s2", func(bucket, key string, err error) {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, bucket+" "+key+": "+err.Error())
	})
	reported := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(reports, "\n")
	}
	ctrs, own, theirs := open(admin), open(s2), open(s1)
	real := events.Container{Name: "web", Server: "s2", Status: "Running", Image: "real", Updated: time.Now().UTC()}
	if _, err := own.Put(ctx, bus.Key("s2", "web"), real); err != nil {
		t.Fatal(err)
	}
	if _, err := theirs.Put(ctx, bus.Key("s1", "web"), events.Container{Name: "web", Server: "s1", Status: "Running", Image: "s1s", Updated: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	// Keep's watch starts on its own time (the same race failed
	// TestTheServerPutsBackARecordWhileItsAgentIsDown in CI).
	awaitKeeper(t, ctx, admin, s1, own, real, nil, nats.Header{"KV-Operation": {"DEL"}})
	// The admin follows s2's containers the way the CLI and workers do.
	wctx, unwatch := context.WithCancel(ctx)
	defer unwatch()
	ch, err := ctrs.WatchServer(wctx, "s2")
	if err != nil {
		t.Fatal(err)
	}
	var deletions sync.WaitGroup
	gone := make(chan struct{}, 16)
	deletions.Add(1)
	go func() {
		defer deletions.Done()
		for c := range ch {
			if !c.Synced && c.Value == nil {
				gone <- struct{}{}
			}
		}
	}()

	bucket := ctrs.Bucket()
	target := "$KV." + bucket + ".s2.web"
	del := nats.Header{"KV-Operation": {"DEL"}}
	now := time.Now().UTC()
	stone := struct {
		Deleted string `json:"deleted"`
		events.Signed
	}{Deleted: "s2.web", Signed: events.Signed{SignedAt: &now}}
	token, _ := s1.NC.Opts.UserJWT()
	canon, _ := json.Marshal(stone)
	sig, err := s1.NC.Opts.SignatureCB(append([]byte("skein-record\n"+bucket+"\ns2.web\n"), canon...))
	if err != nil {
		t.Fatal(err)
	}
	stone.Signer, stone.Sig = token, base64.RawStdEncoding.EncodeToString(sig)
	forged, _ := json.Marshal(stone)

	attacks := []struct {
		name string
		do   func()
	}{
		{"an unsigned marker", func() { replayAs(t, s1, "s1", "gone", nil, del, target) }},
		{"a marker signed by s1 naming s2's key", func() { replayAs(t, s1, "s1", "gone", forged, del, target) }},
		{"s1's genuine deletion of its own record", func() {
			if err := theirs.Delete(ctx, bus.Key("s1", "web"), 0); err != nil {
				t.Fatal(err)
			}
			req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + ".s1.web"})
			if err := s1.NC.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET.KV_" + bucket, Reply: target, Data: req}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, at := range attacks {
		before, err := bus.LastStored(ctx, admin.NC, "KV_"+bucket, target)
		if err != nil || before == nil {
			t.Fatalf("%s: s2's record before: %v %v", at.name, before, err)
		}
		at.do()
		// The marker lands, then s2's agent puts its record back over it.
		testutil.Eventually(t, 10*time.Second, func() bool {
			m, err := bus.LastStored(ctx, admin.NC, "KV_"+bucket, target)
			return err == nil && m != nil && m.Seq > before.Seq+1
		}, "%s: no marker and no record put back under s2's key", at.name)
		testutil.Eventually(t, 10*time.Second, func() bool {
			got, err := ctrs.Get(ctx, bus.Key("s2", "web"))
			return err == nil && got.Value.Image == "real"
		}, "%s: s2's container is not read as s2 wrote it", at.name)
		if !strings.Contains(reported(), "s2.web: put back its record") {
			t.Errorf("%s: s2's agent did not say it put its record back: %q", at.name, reported())
		}
		select {
		case <-gone:
			t.Fatalf("%s: the admin saw s2's container deleted", at.name)
		default:
		}
	}

	// s2's own deletion deletes, and nothing puts the record back.
	if err := own.Delete(ctx, bus.Key("s2", "web"), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the admin never saw s2's own deletion")
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := ctrs.Get(ctx, bus.Key("s2", "web")); !errors.Is(err, bus.ErrNoRecord) {
			t.Fatalf("after s2 deleted its container, the admin reads: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	unwatch()
	deletions.Wait()
}

// TestTheServerPutsBackARecordWhileItsAgentIsDown: with s2's agent down
// (its Keep not running), s1 has a copy of its own stored under s2's
// container key. The bus's server (KeepAll, as the admin) puts s2's record
// back: the admin reads it as s2 wrote it, not refused until s2 returns.
func TestTheServerPutsBackARecordWhileItsAgentIsDown(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 60*time.Second)
	var mu sync.Mutex
	var reports []string
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	bus.KeepAll(kctx, admin.JS, func(bucket, key string, err error) {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, bucket+" "+key+": "+err.Error())
	})
	ctrs, err := bus.OpenStore[events.Container](ctx, admin.JS)
	if err != nil {
		t.Fatal(err)
	}
	own, err := bus.OpenStore[events.Container](ctx, s2.JS)
	if err != nil {
		t.Fatal(err)
	}
	real := events.Container{Name: "web", Server: "s2", Status: "Running", Image: "real", Updated: time.Now().UTC()}
	if _, err := own.Put(ctx, bus.Key("s2", "web"), real); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		got, err := ctrs.Get(ctx, bus.Key("s2", "web"))
		return err == nil && got.Value.Image == "real"
	}, "s2's container is not stored")
	fake, _ := json.Marshal(events.Container{Name: "web", Server: "s2", Status: "Running", Image: "s1s", Updated: time.Now().UTC()})
	awaitKeeper(t, ctx, admin, s1, own, real, fake, nil)
	// s2's agent goes down.
	s2.Close()

	target := "$KV." + ctrs.Bucket() + ".s2.web"
	before, err := bus.LastStored(ctx, admin.NC, "KV_"+ctrs.Bucket(), target)
	if err != nil || before == nil {
		t.Fatalf("s2's record before: %v %v", before, err)
	}
	replayAs(t, s1, "s1", "web", fake, nil, target)
	testutil.Eventually(t, 10*time.Second, func() bool {
		m, err := bus.LastStored(ctx, admin.NC, "KV_"+ctrs.Bucket(), target)
		return err == nil && m != nil && m.Seq > before.Seq
	}, "s1's copy was not stored under s2's key")
	testutil.Eventually(t, 10*time.Second, func() bool {
		got, err := ctrs.Get(ctx, bus.Key("s2", "web"))
		return err == nil && got.Value.Image == "real"
	}, "with s2's agent down, the admin does not read s2's container as s2 wrote it")
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(reports, "\n"), "s2.web: put back its record") {
		t.Errorf("the server did not say it put s2's record back: %q", reports)
	}
}

// awaitKeeper waits until a keeper of s2's container records follows their
// bucket: keepers start their watches on goroutines of their own, seconds
// late on CI's loaded cores. It has s2 store probes (as rec) and s1 forge
// a copy over each (data and hdr), again until one is put back, each
// within 2 s, for up to 30 s.
func awaitKeeper(t *testing.T, ctx context.Context, admin, s1 *bus.Conn, own *bus.Store[events.Container], rec events.Container, data []byte, hdr nats.Header) {
	t.Helper()
	probe := 0
	testutil.Eventually(t, 30*time.Second, func() bool {
		probe++
		key := bus.Key("s2", "probe"+strconv.Itoa(probe))
		subject := "$KV." + own.Bucket() + "." + key
		if _, err := own.Put(ctx, key, rec); err != nil {
			t.Fatal(err)
		}
		put, err := bus.LastStored(ctx, admin.NC, "KV_"+own.Bucket(), subject)
		if err != nil || put == nil {
			return false
		}
		replayAs(t, s1, "s1", "probe", data, hdr, subject)
		// The forged copy, then s2's record put back after it.
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			m, err := bus.LastStored(ctx, admin.NC, "KV_"+own.Bucket(), subject)
			if err == nil && m != nil && m.Seq > put.Seq+1 && len(m.Data) > 0 && (len(data) == 0 || string(m.Data) != string(data)) {
				return true
			}
		}
		return false
	}, "no keeper put a forged probe of s2's back")
}
