package bus_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

// replayAs has conn's agent make the bus's server publish data, with
// headers, on target: stored under one of the agent's own keys, then read
// back by a direct get whose reply subject is target. No permission covers
// where the server sends a reply.
func replayAs(t *testing.T, conn *bus.Conn, server, name string, data []byte, headers nats.Header, target string) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	bucket := bus.BucketConfigs(1)[0].Bucket
	key := "$KV." + bucket + "." + server + "." + name
	m := nats.NewMsg(key)
	m.Data = data
	for k, vs := range headers {
		for _, v := range vs {
			m.Header.Add(k, v)
		}
	}
	if _, err := conn.JS.PublishMsg(ctx, m); err != nil {
		t.Fatalf("agent %s cannot store under its own key: %v", server, err)
	}
	req, _ := json.Marshal(map[string]string{"last_by_subj": key})
	if err := conn.NC.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET.KV_" + bucket, Reply: target, Data: req}); err != nil {
		t.Fatal(err)
	}
}

// commandConsumerOf is server's command consumer as conn sees it, once the
// bus's server has made it (it does so as credentials are issued).
func commandConsumerOf(t *testing.T, conn *bus.Conn, server string) jetstream.Consumer {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	var cons jetstream.Consumer
	testutil.Eventually(t, 10*time.Second, func() bool {
		var err error
		cons, err = conn.JS.Consumer(ctx, bus.StreamCommands, bus.AgentConsumerName(server))
		return err == nil
	}, "%s's command consumer was never made", server)
	return cons
}

// pingRecorder runs a runtime for server on conn whose ping handler records
// the ids it ran, until the test ends.
func pingRecorder(t *testing.T, conn *bus.Conn, server string) func() []string {
	t.Helper()
	var mu sync.Mutex
	var ran []string
	rt := workers.NewRuntime(conn, server, zerolog.Nop())
	workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: func(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
		mu.Lock()
		ran = append(ran, req.ID())
		mu.Unlock()
		return events.Pong{Server: server, Note: "real", Time: time.Now().UTC()}, nil
	}})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rt.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(ran)
	}
}

// TestAgentCannotCommandAnotherServer (issue 23, attack 1): agent s1 has the
// bus's server store on s2's command subject an envelope of its own making,
// and a copy of a real command the admin sent s1 (with s1's MAC). Both reach
// s2's queue; s2's agent runs neither, and still runs the admin's command.
func TestAgentCannotCommandAnotherServer(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 60*time.Second)
	client := bus.NewClient(admin, "cli")
	target := bus.CommandSubject("s2", events.TypePing)

	made, err := events.New(events.TypePing, "cli", "s2", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := made.Marshal()
	replayAs(t, s1, "s1", "made", raw, nats.Header{bus.HeaderFreshID: {"1"}}, target)

	// A real command for s1, as s1's agent takes it from its queue.
	real1, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Send(ctx, real1); err != nil {
		t.Fatal(err)
	}
	cons := commandConsumerOf(t, s1, "s1")
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var copied int
	for m := range batch.Messages() {
		// Without its message id, which JetStream would drop as a duplicate.
		h := m.Headers()
		h.Del(nats.MsgIdHdr)
		replayAs(t, s1, "s1", "copied", m.Data(), h, target)
		copied++
	}
	if copied != 1 {
		t.Fatalf("s1 took %d commands from its queue, want the admin's 1", copied)
	}

	// Both are in s2's queue before its agent starts.
	s2cons := commandConsumerOf(t, admin, "s2")
	testutil.Eventually(t, 10*time.Second, func() bool {
		info, err := s2cons.Info(ctx)
		return err == nil && info.NumPending == 2
	}, "the forged commands never reached s2's queue")

	ran := pingRecorder(t, s2, "s2")
	real2, err := client.NewCommand("s2", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Do(ctx, bus.Call{Envelope: real2}); err != nil {
		t.Fatalf("the admin's command to s2: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		info, err := s2cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "s2's queue was never emptied")
	if got := ran(); !slices.Equal(got, []string{real2.ID}) {
		t.Errorf("s2 ran %v; want only the admin's %s (forged: %s, copied: %s)", got, real2.ID, made.ID, real1.ID)
	}
}

// TestAgentCannotAnswerAnotherServersCommand (issue 23, attack 3): agent s1
// has the bus's server store a result for s3's command on s3's own result
// subject before s3 ran it. The client does not take it; s3's agent runs the
// command (it is not "already answered"), its result replaces the forged one,
// and the client takes that.
func TestAgentCannotAnswerAnotherServersCommand(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s3 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s3"})
	ctx := ctxT(t, 60*time.Second)
	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand("s3", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	id := env.ID
	forged := []byte(`{"id":"result-` + id + `","type":"result","v":1,"time":"2026-11-26T10:00:00Z","source":"agent/s3","server":"s3",` +
		`"data":{"command":"` + id + `","command_type":"server.ping","ok":true,"output":{"server":"s3","note":"forged","time":"2026-11-26T10:00:00Z"}}}`)
	replayAs(t, s1, "s1", "result", forged, nil, bus.ResultSubject("s3", id))
	testutil.Eventually(t, 10*time.Second, func() bool {
		raw, err := bus.LastMsg(ctx, admin.NC, bus.StreamResults, bus.ResultSubject("s3", id))
		return err == nil && strings.Contains(string(raw), "forged")
	}, "the forged result was never stored on s3's result subject")

	ran := pingRecorder(t, s3, "s3")
	res, err := client.Do(ctx, bus.Call{Envelope: env})
	if err != nil {
		t.Fatalf("s3's result did not reach the client: %v", err)
	}
	if p := pongOf(t, res); p.Note != "real" {
		t.Errorf("the client took %+v, want s3's real answer", p)
	}
	if got := ran(); !slices.Equal(got, []string{id}) {
		t.Errorf("s3 ran %v, want the command once", got)
	}
	raw, err := bus.LastMsg(ctx, admin.NC, bus.StreamResults, bus.ResultSubject("s3", id))
	if err != nil || strings.Contains(string(raw), "forged") {
		t.Errorf("the stored result is still the forged one: %s, %v", raw, err)
	}
	// Asked again later, the stored result is s3's.
	if res, ok, err := client.LookupResult(ctx, "s3", id); !ok || err != nil || pongOf(t, res).Note != "real" {
		t.Errorf("looked up later: %v, %v", ok, err)
	}
}

// TestACopyOfACommandRunsOnce: agent s1 reads a command queued for s2 (its
// MAC is genuine) and, once s2 ran it, has the bus's server store a copy on
// s2's subject again, without the message id JetStream deduplicates by.
// s2 answers the copy from the stored result and does not run it again.
func TestACopyOfACommandRunsOnce(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 60*time.Second)
	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand("s2", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Send(ctx, env); err != nil {
		t.Fatal(err)
	}
	target := bus.CommandSubject("s2", events.TypePing)
	// However s1 came by the copy: it cannot read s2's queue itself
	// (TestAgentCannotReadAnotherServersQueuedCommands).
	queued, err := bus.LastStored(ctx, admin.NC, bus.StreamCommands, target)
	if err != nil || queued == nil {
		t.Fatalf("s2's command is not queued: %v", err)
	}
	queued.Header.Del(nats.MsgIdHdr)

	ran := pingRecorder(t, s2, "s2")
	if _, err := client.WaitResult(ctx, "s2", env.ID, nil); err != nil {
		t.Fatal(err)
	}
	replayAs(t, s1, "s1", "copy", queued.Data, queued.Header, target)
	s2cons := commandConsumerOf(t, admin, "s2")
	testutil.Eventually(t, 10*time.Second, func() bool {
		info, err := s2cons.Info(ctx)
		return err == nil && info.Delivered.Consumer >= 2 && info.NumPending == 0 && info.NumAckPending == 0
	}, "the copy was never taken from s2's queue")
	if got := ran(); !slices.Equal(got, []string{env.ID}) {
		t.Errorf("s2 ran %v, want %s once", got, env.ID)
	}
}

// TestKeysOfEachRole: the admin's and the scheduler's credentials make and
// check every server's MACs; an agent's make and check its own server's
// only, the same the admin's make; the observer's none. A MAC covers the
// subject, the fresh flag and the body.
func TestKeysOfEachRole(t *testing.T) {
	a, err := bus.LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keysOf := func(r bus.Role) *bus.Keys {
		creds, err := a.Creds(r)
		if err != nil {
			t.Fatal(err)
		}
		k, err := bus.ParseKeys(creds)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	admin, sched := keysOf(bus.Role{Kind: "admin"}), keysOf(bus.Role{Kind: "scheduler"})
	s1, obs := keysOf(bus.Role{Kind: "agent", Server: "s1"}), keysOf(bus.Role{Kind: "observer"})
	if obs.Signs() {
		t.Error("the observer's credentials hold a key")
	}
	subject, body := bus.CommandSubject("s1", events.TypePing), []byte(`{"id":"x"}`)
	mac, err := admin.CommandMAC("s1", subject, true, body)
	if err != nil {
		t.Fatal(err)
	}
	if !s1.VerifyCommand("s1", subject, true, body, mac) || !sched.VerifyCommand("s1", subject, true, body, mac) {
		t.Error("s1's agent or the scheduler does not take the admin's MAC of a command to s1")
	}
	for name, ok := range map[string]bool{
		"another subject": s1.VerifyCommand("s1", bus.CommandSubject("s1", "container.delete"), true, body, mac),
		"not fresh":       s1.VerifyCommand("s1", subject, false, body, mac),
		"another body":    s1.VerifyCommand("s1", subject, true, []byte(`{"id":"y"}`), mac),
		"a result's":      s1.VerifyResult("s1", subject, body, mac),
	} {
		if ok {
			t.Errorf("%s: verified", name)
		}
	}
	if _, err := s1.CommandMAC("s2", bus.CommandSubject("s2", events.TypePing), true, body); err == nil {
		t.Error("s1's credentials made a MAC for s2")
	}
	rmac, err := s1.ResultMAC("s1", bus.ResultSubject("s1", "x"), body)
	if err != nil || !admin.VerifyResult("s1", bus.ResultSubject("s1", "x"), body, rmac) {
		t.Errorf("the admin does not take s1's result: %v", err)
	}
	if admin.VerifyResult("s2", bus.ResultSubject("s2", "x"), body, rmac) {
		t.Error("s1's MAC passes as s2's")
	}
}

// TestCredentialsWithoutAKeyAreRefused: credentials whose key block was cut
// (made before commands were signed) are refused at connect, with the fix.
func TestCredentialsWithoutAKeyAreRefused(t *testing.T) {
	url, a := authBus(t)
	creds, err := a.Creds(bus.Role{Kind: "agent", Server: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	cut, _, _ := strings.Cut(string(creds), "-----BEGIN SKEIN KEY")
	_, err = bus.Connect(bus.ConnOptions{URL: url, Log: zerolog.Nop(), Creds: []byte(cut)})
	if err == nil || !strings.Contains(err.Error(), "skein creds agent s1") {
		t.Fatalf("connect with keyless creds = %v, want a refusal naming `skein creds agent s1`", err)
	}
}

// TestAgentCannotReplaceAnotherServersSealKey (issue 23, attack 2): agent s1
// has the bus's server store, as s2's heartbeat, one carrying s1's seal key:
// unsigned, signed by s1's credentials, and a copy of s2's own signed
// heartbeat with the key changed. The admin's read of s2's heartbeat, which
// the CLI seals s2's secrets to, never gives s1's key; s2's next heartbeat
// is read again.
func TestAgentCannotReplaceAnotherServersSealKey(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 30*time.Second)
	open := func(c *bus.Conn) *bus.Store[events.Heartbeat] {
		st, err := bus.OpenStore[events.Heartbeat](ctx, c.JS)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	k2, err := seal.New()
	if err != nil {
		t.Fatal(err)
	}
	k1, err := seal.New()
	if err != nil {
		t.Fatal(err)
	}
	s2Key, s1Key := k2.Public(), k1.Public()
	real := events.Heartbeat{Name: "s2", Status: "up", SealKey: s2Key, Time: time.Now().UTC()}
	if _, err := open(s2).Put(ctx, "s2", real); err != nil {
		t.Fatal(err)
	}
	hbs := open(admin)
	if got, err := hbs.Get(ctx, "s2"); err != nil || got.Value.SealKey != s2Key {
		t.Fatalf("s2's own heartbeat: %+v, %v", got.Value, err)
	}
	stored, err := bus.LastStored(ctx, s1.NC, "KV_skein_servers", "$KV.skein_servers.s2")
	if err != nil || stored == nil {
		t.Fatalf("s1 cannot read s2's heartbeat: %v", err)
	}
	var copied events.Heartbeat
	if err := json.Unmarshal(stored.Data, &copied); err != nil || copied.Sig == "" {
		t.Fatalf("s2's heartbeat is not signed: %s", stored.Data)
	}
	copied.SealKey = s1Key
	copiedRaw, _ := json.Marshal(copied)
	unsigned := events.Heartbeat{Name: "s2", Status: "up", SealKey: s1Key, Time: time.Now().UTC()}
	unsignedRaw, _ := json.Marshal(unsigned)
	// Signed with s1's credentials, as s1's store signs its own, but named s2.
	creds, err := a.Creds(bus.Role{Kind: "agent", Server: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	s1b, err := bus.Connect(bus.ConnOptions{URL: url, Log: zerolog.Nop(), Creds: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer s1b.Close()
	token, _ := s1b.NC.Opts.UserJWT()
	now := time.Now().UTC()
	bySelf := events.Heartbeat{Name: "s2", Status: "up", SealKey: s1Key, Time: now, Signed: events.Signed{SignedAt: &now}}
	canon, _ := json.Marshal(bySelf)
	sig, err := s1b.NC.Opts.SignatureCB(append([]byte("skein-record\nskein_servers\ns2\n"), canon...))
	if err != nil {
		t.Fatal(err)
	}
	bySelf.Signer, bySelf.Sig = token, base64.RawStdEncoding.EncodeToString(sig)
	bySelfRaw, _ := json.Marshal(bySelf)

	for name, raw := range map[string][]byte{"unsigned": unsignedRaw, "signed by s1": bySelfRaw, "s2's, changed": copiedRaw} {
		replayAs(t, s1, "s1", "hb", raw, nil, "$KV.skein_servers.s2")
		testutil.Eventually(t, 10*time.Second, func() bool {
			m, err := bus.LastStored(ctx, admin.NC, "KV_skein_servers", "$KV.skein_servers.s2")
			return err == nil && m != nil && strings.Contains(string(m.Data), s1Key)
		}, "%s: the forged heartbeat was never stored as s2's", name)
		got, err := hbs.Get(ctx, "s2")
		if err == nil || got.Value.SealKey == s1Key {
			t.Errorf("%s: the admin read s2's seal key as %q (%v)", name, got.Value.SealKey, err)
		}
	}
	real.Time = time.Now().UTC()
	if _, err := open(s2).Put(ctx, "s2", real); err != nil {
		t.Fatal(err)
	}
	if got, err := hbs.Get(ctx, "s2"); err != nil || got.Value.SealKey != s2Key {
		t.Errorf("s2's next heartbeat: %+v, %v", got.Value, err)
	}
}

// TestAnotherAgentCannotSuppressAnEvent: agent s1 publishes on its own event
// subject under each message id s2's next event could be deduplicated by
// (its id, as container events' ids are foreseeable); s2's event is stored.
func TestAnotherAgentCannotSuppressAnEvent(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 30*time.Second)
	const id = "s2-web-1-1"
	for _, msgID := range []string{id, "e-" + id, "s2-" + id} {
		m := nats.NewMsg(bus.EventSubject("s1", events.TypeServerUp))
		m.Data = []byte(`{"forged":true}`)
		m.Header.Set(nats.MsgIdHdr, msgID)
		if _, err := s1.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	pub := bus.NewPublisher(s2.JS, "agent/s2", "s2")
	if err := pub.Tell(ctx, id, events.TypeServerUp, events.ServerEvent{Name: "s2"}); err != nil {
		t.Fatal(err)
	}
	m, err := bus.LastStored(ctx, admin.NC, bus.StreamEvents, bus.EventSubject("s2", events.TypeServerUp))
	if err != nil || m == nil || !strings.Contains(string(m.Data), id) {
		t.Fatalf("s2's event was not stored: %v, %v", m, err)
	}
	// Told again (a retry), it is stored once.
	if err := pub.Tell(ctx, id, events.TypeServerUp, events.ServerEvent{Name: "s2"}); err != nil {
		t.Fatal(err)
	}
	st, err := admin.JS.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(bus.EventSubject("s2", ">")))
	if err != nil || info.State.Subjects[bus.EventSubject("s2", events.TypeServerUp)] != 1 {
		t.Errorf("s2's event stored %v times, want once (%v)", info.State.Subjects, err)
	}
}

// TestAgentCannotWipeOtherServersRecords (issue 23, attack 4): a message
// with Nats-Rollup: all under agent s1's own key, published or had
// published there by the bus's server, would delete every server's records
// of the bucket. It is refused; s2's record stays.
func TestAgentCannotWipeOtherServersRecords(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 30*time.Second)
	hbs, err := bus.OpenStore[events.Heartbeat](ctx, s2.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hbs.Put(ctx, "s2", events.Heartbeat{Name: "s2", Status: "up", Time: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	bucket := hbs.Bucket()
	m := nats.NewMsg("$KV." + bucket + ".s1")
	m.Data = []byte(`{}`)
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	if _, err := s1.JS.PublishMsg(ctx, m); err == nil {
		t.Error("a rollup under s1's own key was stored")
	}
	// Staged in a stream that takes rollups (s1's own backups store), then
	// had published onto s1's key in the bucket.
	staged := nats.NewMsg("$O." + bus.BackupsBucket("s1") + ".C.wipe")
	staged.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	if _, err := s1.JS.PublishMsg(ctx, staged); err == nil {
		req, _ := json.Marshal(map[string]string{"last_by_subj": staged.Subject})
		_ = s1.NC.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET.OBJ_" + bus.BackupsBucket("s1"), Reply: "$KV." + bucket + ".s1", Data: req})
	}
	ours, err := bus.OpenStore[events.Heartbeat](ctx, admin.JS)
	if err != nil {
		t.Fatal(err)
	}
	// The replay, if it were taken, lands at once: give it the time a publish takes.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := ours.Get(ctx, "s2"); err != nil {
			t.Fatalf("s2's heartbeat is gone: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestOthersCannotRewriteAServersRecords (issue 23, attacks 4 and 5): agent
// s1 has the bus's server store, under s2's container key, a record of its
// own signed by its credentials; the observer, which publishes nothing, has
// s1's genuine record copied there. The admin's reads (what the CLI lists
// and the scheduler places by) never take either as s2's; s2's own record,
// written again, is read.
func TestOthersCannotRewriteAServersRecords(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	obs := connectAs(t, url, a, bus.Role{Kind: "observer"})
	ctx := ctxT(t, 30*time.Second)
	open := func(c *bus.Conn) *bus.Store[events.Container] {
		st, err := bus.OpenStore[events.Container](ctx, c.JS)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	real := events.Container{Name: "web", Server: "s2", Status: "Running", Image: "real", Updated: time.Now().UTC()}
	if _, err := open(s2).Put(ctx, bus.Key("s2", "web"), real); err != nil {
		t.Fatal(err)
	}
	if _, err := open(s1).Put(ctx, bus.Key("s1", "web"), events.Container{Name: "web", Server: "s1", Status: "Running", Image: "s1s", Updated: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	bucket := open(admin).Bucket()
	target := "$KV." + bucket + ".s2.web"

	// s1's own making, signed by s1, saying s2.
	now := time.Now().UTC()
	forged := events.Container{Name: "web", Server: "s2", Status: "Running", Image: "forged", Updated: now, Signed: events.Signed{SignedAt: &now}}
	token, _ := s1.NC.Opts.UserJWT()
	canon, _ := json.Marshal(forged)
	sig, err := s1.NC.Opts.SignatureCB(append([]byte("skein-record\n"+bucket+"\ns2.web\n"), canon...))
	if err != nil {
		t.Fatal(err)
	}
	forged.Signer, forged.Sig = token, base64.RawStdEncoding.EncodeToString(sig)
	forgedRaw, _ := json.Marshal(forged)

	ctrs := open(admin)
	attempts := map[string]func(){
		"s1's own, signed": func() { replayAs(t, s1, "s1", "forge", forgedRaw, nil, target) },
		"s1's record, copied by the observer": func() {
			req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + ".s1.web"})
			if err := obs.NC.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET.KV_" + bucket, Reply: target, Data: req}); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, attack := range attempts {
		before, _ := bus.LastStored(ctx, admin.NC, "KV_"+bucket, target)
		attack()
		testutil.Eventually(t, 10*time.Second, func() bool {
			m, err := bus.LastStored(ctx, admin.NC, "KV_"+bucket, target)
			return err == nil && m != nil && before != nil && m.Seq != before.Seq
		}, "%s: nothing was stored under s2's key", name)
		if got, err := ctrs.Get(ctx, bus.Key("s2", "web")); err == nil {
			t.Errorf("%s: the admin read s2's container as %+v", name, got.Value)
		}
		if list, err := ctrs.ListServer(ctx, "s2"); err != nil || len(list) != 0 {
			t.Errorf("%s: s2's containers listed as %+v (%v)", name, list, err)
		}
		if _, err := open(s2).Put(ctx, bus.Key("s2", "web"), real); err != nil {
			t.Fatal(err)
		}
		if got, err := ctrs.Get(ctx, bus.Key("s2", "web")); err != nil || got.Value.Image != "real" {
			t.Errorf("%s: s2's own record written again: %+v, %v", name, got.Value, err)
		}
	}
}

// TestServerNamesThatStartOthersKeysAreRefused: the jobs' keys start with
// "job." and the scheduler's lease's with "scheduler.": an agent of a
// server so named could write them, so no credentials are issued for it.
func TestServerNamesThatStartOthersKeysAreRefused(t *testing.T) {
	for _, name := range []string{"job", "scheduler"} {
		if _, err := bus.ParseRole("agent", name); err == nil || !strings.Contains(err.Error(), "choose another name") {
			t.Errorf("agent %s: %v", name, err)
		}
	}
	if _, err := bus.ParseRole("agent", "jobs"); err != nil {
		t.Errorf("agent jobs: %v", err)
	}
}

// TestAgentCannotWriteJobs (found by review): the scheduler acts on every
// job for every server (deleting a job deletes its instances everywhere).
// A job agent s1 signs under its own key, or has stored under the jobs'
// keys, is not read; the admin's is. Agents may not even publish there.
func TestAgentCannotWriteJobs(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	sched := connectAs(t, url, a, bus.Role{Kind: "scheduler"})
	ctx := ctxT(t, 30*time.Second)
	job := events.Job{JobAdd: events.JobAdd{Name: "web", Image: "evil", Count: 1}, Version: 1, Deleting: true, Created: time.Now().UTC(), Updated: time.Now().UTC()}
	// Signed by s1 as its store would, under s1's key and under the job's.
	token, _ := s1.NC.Opts.UserJWT()
	for _, key := range []string{"s1.web", "job.web"} {
		j := job
		now := time.Now().UTC()
		j.SignedAt = &now
		canon, _ := json.Marshal(j)
		sig, err := s1.NC.Opts.SignatureCB(append([]byte("skein-record\nskein_jobs\n"+key+"\n"), canon...))
		if err != nil {
			t.Fatal(err)
		}
		j.Signer, j.Sig = token, base64.RawStdEncoding.EncodeToString(sig)
		raw, _ := json.Marshal(j)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = s1.JS.Publish(pctx, "$KV.skein_jobs."+key, raw)
		cancel()
		if err == nil {
			t.Errorf("agent s1 published a job under %s", key)
		}
		replayAs(t, s1, "s1", "job", raw, nil, "$KV.skein_jobs."+key)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		m, err := bus.LastStored(ctx, admin.NC, "KV_skein_jobs", "$KV.skein_jobs.s1.web")
		m2, err2 := bus.LastStored(ctx, admin.NC, "KV_skein_jobs", "$KV.skein_jobs.job.web")
		return err == nil && err2 == nil && m != nil && m2 != nil
	}, "the forged jobs were never stored: %v", lazy(func() string {
		m, err := bus.LastStored(ctx, admin.NC, "KV_skein_jobs", "$KV.skein_jobs.s1.web")
		m2, err2 := bus.LastStored(ctx, admin.NC, "KV_skein_jobs", "$KV.skein_jobs.job.web")
		return fmt.Sprint(m, err, m2, err2)
	}))
	jobs, err := bus.OpenStore[events.Job](ctx, sched.JS)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := jobs.List(ctx); err != nil || len(got) != 0 {
		t.Errorf("the scheduler reads jobs s1 wrote: %+v, %v", got, err)
	}
	ours, err := bus.OpenStore[events.Job](ctx, admin.JS)
	if err != nil {
		t.Fatal(err)
	}
	real := job
	real.Image, real.Deleting = "real", false
	if _, err := ours.Put(ctx, "job.web", real); err != nil {
		t.Fatal(err)
	}
	if got, err := jobs.Get(ctx, "job.web"); err != nil || got.Value.Image != "real" {
		t.Errorf("the admin's job: %+v, %v", got.Value, err)
	}
}

// TestWaitingForAnIDNeedsItsServer (found by review): on a bus with
// credentials any agent may answer for an id with its own MAC, so waiting
// for a result without the command's server is refused, naming the fix.
func TestWaitingForAnIDNeedsItsServer(t *testing.T) {
	url, a := authBus(t)
	client := bus.NewClient(connectAs(t, url, a, bus.Role{Kind: "admin"}), "cli")
	_, err := client.WaitResult(ctxT(t, 5*time.Second), "", "abc", nil)
	if err == nil || !strings.Contains(err.Error(), "-s SERVER") {
		t.Fatalf("WaitResult without a server: %v", err)
	}
}

// lazy formats a message only when it is printed.
type lazy func() string

func (l lazy) String() string { return l() }

// TestAnOldRecordStoredAgainIsRefused (found by review): agent s1 keeps a
// copy of s2's genuine heartbeat and, once s2 has written a newer one, has
// the old one stored as s2's again. Its signature is s2's, but it was signed
// long before the stream stored it: the admin does not take it.
func TestAnOldRecordStoredAgainIsRefused(t *testing.T) {
	defer bus.SetSignedStoredSkew(300 * time.Millisecond)()
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 30*time.Second)
	st, err := bus.OpenStore[events.Heartbeat](ctx, s2.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "s2", events.Heartbeat{Name: "s2", Status: "down", Address: "10.0.0.1", Time: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	old, err := bus.LastStored(ctx, s1.NC, "KV_skein_servers", "$KV.skein_servers.s2")
	if err != nil || old == nil {
		t.Fatalf("s1 cannot read s2's heartbeat: %v", err)
	}
	signedAt := time.Now()
	testutil.Eventually(t, 5*time.Second, func() bool { return time.Since(signedAt) > time.Second }, "time stood still")
	if _, err := st.Put(ctx, "s2", events.Heartbeat{Name: "s2", Status: "up", Address: "10.0.0.2", Time: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	hbs, err := bus.OpenStore[events.Heartbeat](ctx, admin.JS)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := hbs.Get(ctx, "s2"); err != nil || got.Value.Address != "10.0.0.2" {
		t.Fatalf("s2's new heartbeat: %+v, %v", got.Value, err)
	}
	replayAs(t, s1, "s1", "old", old.Data, nil, "$KV.skein_servers.s2")
	testutil.Eventually(t, 10*time.Second, func() bool {
		m, err := bus.LastStored(ctx, admin.NC, "KV_skein_servers", "$KV.skein_servers.s2")
		return err == nil && m != nil && strings.Contains(string(m.Data), "10.0.0.1")
	}, "the old copy was never stored")
	for name, read := range map[string]func() (bus.Entry[events.Heartbeat], error){
		"Get":    func() (bus.Entry[events.Heartbeat], error) { return hbs.Get(ctx, "s2") },
		"Latest": func() (bus.Entry[events.Heartbeat], error) { return hbs.Latest(ctx, "s2") },
	} {
		if got, err := read(); err == nil || got.Value.Address == "10.0.0.1" {
			t.Errorf("%s took the old copy as s2's heartbeat: %+v, %v", name, got.Value, err)
		}
	}
}

// TestAnotherAgentCannotPreemptACommandID (found by review): agent s1 has
// copies stored on s2's command subject, before the admin sends a command
// with an id chosen in advance (--id), under every message id JetStream
// could deduplicate it by. s2 drops the copies and still runs the real one.
func TestAnotherAgentCannotPreemptACommandID(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 60*time.Second)
	const id = "deploy-42"
	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand("s2", events.TypePing, id, events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	target := bus.CommandSubject("s2", events.TypePing)
	raw, _ := env.Marshal()
	for i, msgID := range []string{id, "c-" + id, "result-" + id} {
		replayAs(t, s1, "s1", fmt.Sprintf("pre%d", i), raw, nats.Header{nats.MsgIdHdr: {msgID}}, target)
	}
	s2cons := commandConsumerOf(t, admin, "s2")
	testutil.Eventually(t, 10*time.Second, func() bool {
		info, err := s2cons.Info(ctx)
		return err == nil && info.NumPending == 3
	}, "the copies never reached s2's queue")
	ran := pingRecorder(t, s2, "s2")
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	res, err := client.Do(dctx, bus.Call{Envelope: env})
	if err != nil {
		t.Fatalf("the admin's command %s: %v", id, err)
	}
	if p := pongOf(t, res); p.Note != "real" {
		t.Errorf("took %+v", p)
	}
	if got := ran(); !slices.Equal(got, []string{id}) {
		t.Errorf("s2 ran %v, want %s once", got, id)
	}
}

// TestAStoredResultStaysItsAgents (found by review of issue 23, attack 3):
// once s2 answered a command, agent s1 has messages of its own stored on
// the result's subject, more than the subject keeps (each a copy of the
// result with its output changed). The admin still looks up s2's result,
// the command sent again is answered from it without running twice, and
// the stream took no more than the subject keeps.
func TestAStoredResultStaysItsAgents(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 90*time.Second)
	const id = "deploy-43"
	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand("s2", events.TypePing, id, events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	ran := pingRecorder(t, s2, "s2")
	// Sent again under its id when the answer is slow (a loaded machine);
	// the log says whether s2 had run it.
	for try := 1; ; try++ {
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := client.Do(dctx, bus.Call{Envelope: env})
		cancel()
		if err == nil {
			break
		}
		if try == 3 {
			t.Fatalf("the admin's command %s: %v (s2 ran %v)", id, err, ran())
		}
		t.Logf("the admin's command %s, try %d: %v (s2 ran %v); sent again", id, try, err, ran())
	}
	subject := bus.ResultSubject("s2", id)
	real, err := bus.LastStored(ctx, admin.NC, bus.StreamResults, subject)
	if err != nil || real == nil {
		t.Fatalf("s2's result is not stored: %v", err)
	}
	forged := []byte(strings.Replace(string(real.Data), `"real"`, `"forged"`, 1))
	for i := range bus.ResultSlots + 2 {
		// With the real MAC, and without the real one's expected sequence.
		replayAs(t, s1, "s1", fmt.Sprintf("res%d", i), forged, nats.Header{bus.HeaderMAC: real.Header.Values(bus.HeaderMAC)}, subject)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		m, err := bus.LastStored(ctx, admin.NC, bus.StreamResults, subject)
		return err == nil && m != nil && m.Seq > real.Seq
	}, "s1's copies were not stored on s2's result subject")
	res, ok, err := client.LookupResult(ctx, "s2", id)
	if err != nil || !ok {
		t.Fatalf("the admin no longer finds s2's result: %v %v", ok, err)
	}
	if p := pongOf(t, res); p.Note != "real" {
		t.Errorf("the admin looked up %+v", p)
	}
	again, err := client.Do(ctx, bus.Call{Envelope: env})
	if err != nil {
		t.Fatalf("the command sent again: %v", err)
	}
	if p := pongOf(t, again); p.Note != "real" {
		t.Errorf("the command sent again was answered %+v", p)
	}
	if got := ran(); !slices.Equal(got, []string{id}) {
		t.Errorf("s2 ran %v, want %s once", got, id)
	}
	st, err := admin.JS.Stream(ctx, bus.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil || info.State.Subjects[subject] > bus.ResultSlots {
		t.Errorf("s2's result subject holds %v messages (%v), at most %d", info.State.Subjects, err, bus.ResultSlots)
	}
}

// TestAgentCannotReadAnotherServersQueuedCommands (found reviewing issue
// 23): a command queued for s2 would tell agent s1 its id before s2
// answers, and s1 could have the result's subject filled with its own
// messages first. Every way to read a stream's message, tried by s1 and the
// observer on s2's queued command, tells them nothing of it.
func TestAgentCannotReadAnotherServersQueuedCommands(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	client := bus.NewClient(admin, "cli")
	ctx := ctxT(t, 30*time.Second)
	const id = "secret-id-7"
	env, err := client.NewCommand("s2", events.TypePing, id, events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Send(ctx, env); err != nil {
		t.Fatal(err)
	}
	subject := bus.CommandSubject("s2", events.TypePing)
	if m, err := bus.LastStored(ctx, admin.NC, bus.StreamCommands, subject); err != nil || m == nil || !strings.Contains(string(m.Data), id) {
		t.Fatalf("the command is not queued: %v %v", m, err)
	}
	for _, r := range []bus.Role{{Kind: "agent", Server: "s1"}, {Kind: "observer"}} {
		c := connectAs(t, url, a, r)
		body := func(v map[string]any) []byte { b, _ := json.Marshal(v); return b }
		reads := map[string]*nats.Msg{
			"direct get":                {Subject: "$JS.API.DIRECT.GET." + bus.StreamCommands, Data: body(map[string]any{"last_by_subj": subject})},
			"direct get by subject":     {Subject: "$JS.API.DIRECT.GET." + bus.StreamCommands + "." + subject},
			"direct get by sequence":    {Subject: "$JS.API.DIRECT.GET." + bus.StreamCommands, Data: body(map[string]any{"seq": 1})},
			"message get":               {Subject: "$JS.API.STREAM.MSG.GET." + bus.StreamCommands, Data: body(map[string]any{"last_by_subj": subject})},
			"message get by sequence":   {Subject: "$JS.API.STREAM.MSG.GET." + bus.StreamCommands, Data: body(map[string]any{"seq": 1})},
			"an ordered consumer":       {Subject: "$JS.API.CONSUMER.CREATE." + bus.StreamCommands, Data: body(map[string]any{"stream_name": bus.StreamCommands, "config": map[string]any{"filter_subject": subject, "ack_policy": "none", "mem_storage": true}})},
			"its command consumer info": {Subject: "$JS.API.CONSUMER.INFO." + bus.StreamCommands + "." + bus.AgentConsumerName("s2")},
		}
		for name, m := range reads {
			// A denied request is never answered: it waits out its half second.
			rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			reply, err := c.NC.RequestMsgWithContext(rctx, m)
			cancel()
			if err == nil && tells(reply.Data, id) {
				t.Errorf("%s read s2's queued command by %s: %.200s", r.Name(), name, reply.Data)
			}
		}
	}
}

// tells says whether a JetStream API answer holds s, raw or in a stored
// message it carries (base64 in the JSON).
func tells(answer []byte, s string) bool {
	var got struct {
		Message struct {
			Data []byte `json:"data"`
		} `json:"message"`
	}
	_ = json.Unmarshal(answer, &got)
	return strings.Contains(string(answer), s) || strings.Contains(string(got.Message.Data), s)
}

// TestAgentCannotEmptyAnotherServersBackups (issue 23, attack 4 on the
// object stores): object stores took rollups, so agent s1 could store a
// "Nats-Rollup: all" message in its own backups store and have it
// published onto s2's (or the images store's) subjects, emptying them.
// Backups stores refuse rollups: s1 cannot stage one, and s2's backup
// and the images store's image read back whole after s1 tried.
func TestAgentCannotEmptyAnotherServersBackups(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 30*time.Second)
	var obs2 jetstream.ObjectStore
	testutil.Eventually(t, 10*time.Second, func() bool {
		var err1, err2 error
		obs2, err2 = s2.JS.ObjectStore(ctx, bus.BackupsBucket("s2"))
		_, err1 = s1.JS.ObjectStore(ctx, bus.BackupsBucket("s1"))
		return err1 == nil && err2 == nil
	}, "the backups stores were never made")
	dump := []byte(strings.Repeat("a backup ", 40000)) // several chunks
	if _, err := bus.PutBackup(ctx, s2.JS, bus.BackupsBucket("s2"), jetstream.ObjectMeta{Name: "db1.d.1"}, bytes.NewReader(dump)); err != nil {
		t.Fatal(err)
	}
	images, err := admin.JS.ObjectStore(ctx, bus.ImagesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := images.PutBytes(ctx, "app", []byte("an image")); err != nil {
		t.Fatal(err)
	}
	staged := nats.NewMsg("$O." + bus.BackupsBucket("s1") + ".C.wipe")
	staged.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	if _, err := s1.JS.PublishMsg(ctx, staged); err == nil {
		t.Error("s1 stored a rollup in its backups store")
	}
	// Whatever the stream kept, had published onto s2's store and the images'.
	req, _ := json.Marshal(map[string]string{"last_by_subj": staged.Subject})
	for _, target := range []string{"$O." + bus.BackupsBucket("s2") + ".C.x", "$O." + bus.ImagesBucket + ".C.x"} {
		_ = s1.NC.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET.OBJ_" + bus.BackupsBucket("s1"), Reply: target, Data: req})
	}
	if err := s1.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	// The replay, if it were taken, lands at once: give it the time a publish takes.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got, err := obs2.GetBytes(ctx, "db1.d.1"); err != nil || !bytes.Equal(got, dump) {
			t.Fatalf("s2's backup reads back %d bytes: %v", len(got), err)
		}
		if _, err := images.GetBytes(ctx, "app"); err != nil {
			t.Fatalf("the image is gone: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAFullResultSubjectEndsTheCommand (issue 23): agent s1 guessed a
// command id the user chose (--id) and had the result's subject filled with
// messages of its own before s2 ran it. s2 runs the command once and ends
// it (acknowledged, not held in progress nor run again), though its result
// cannot be stored.
func TestAFullResultSubjectEndsTheCommand(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 60*time.Second)
	const id = "deploy-44"
	subject := bus.ResultSubject("s2", id)
	for i := range bus.ResultSlots {
		replayAs(t, s1, "s1", fmt.Sprintf("full%d", i), []byte(`{"forged":true}`), nil, subject)
	}
	st, err := admin.JS.Stream(ctx, bus.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
		return err == nil && info.State.Subjects[subject] == bus.ResultSlots
	}, "s1's messages did not fill the result's subject")
	s2cons := commandConsumerOf(t, admin, "s2")
	ran := pingRecorder(t, s2, "s2")
	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand("s2", events.TypePing, id, events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Send(ctx, env); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		info, err := s2cons.Info(ctx)
		return err == nil && slices.Equal(ran(), []string{id}) && info.NumAckPending == 0 && info.NumPending == 0
	}, "s2 did not end the command (ran %v)", lazy(func() string { return fmt.Sprint(ran()) }))
	// Bounded look for a second run: a redelivery would come within the ack wait.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got := ran(); len(got) != 1 {
			t.Fatalf("s2 ran %v, want %s once", got, id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
