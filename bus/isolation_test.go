package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

// runAgent runs a runtime for server on conn that answers pings, as command
// and as query, with note; it stops when the test ends. Its error, if Run
// returns one before then, comes on the channel.
func runAgent(t *testing.T, conn *bus.Conn, server, note string, log zerolog.Logger) <-chan error {
	t.Helper()
	rt := workers.NewRuntime(conn, server, log)
	pong := func(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
		return events.Pong{Server: server, Note: note, Time: time.Now().UTC()}, nil
	}
	workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: pong})
	workers.HandleQuery(rt, workers.Query[events.Ping, events.Pong]{Type: events.TypePing, Inline: true, Run: pong})
	ctx, stop := context.WithCancel(context.Background())
	ran, done := make(chan error, 1), make(chan struct{})
	go func() { defer close(done); ran <- rt.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("the runtime of %s did not stop", server)
		}
	})
	return ran
}

// pongOf reads the pong of a ping's result.
func pongOf(t *testing.T, res *events.Result) events.Pong {
	t.Helper()
	var p events.Pong
	if err := json.Unmarshal(res.Output, &p); err != nil {
		t.Fatalf("the result holds no pong: %s", res.Output)
	}
	return p
}

// TestAgentCannotTakeAnotherServersCommands (issue 23, attack 8): agent s1
// points its durable consumer at s3's commands, every way the JetStream API
// offers, before s3's agent ever started. s1 reads none of s3's commands, and
// s3's agent starts and answers them.
func TestAgentCannotTakeAnotherServersCommands(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	ctx := ctxT(t, 60*time.Second)
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	name := bus.AgentConsumerName("s1")
	body, _ := json.Marshal(map[string]any{"stream_name": bus.StreamCommands, "config": map[string]any{
		"durable_name": name, "name": name, "filter_subject": bus.ServerCommands("s3"),
		"ack_policy": "explicit", "deliver_policy": "all"}})
	for _, subject := range []string{
		"$JS.API.CONSUMER.CREATE." + bus.StreamCommands + "." + name + "." + bus.ServerCommands("s3"),
		"$JS.API.CONSUMER.CREATE." + bus.StreamCommands + "." + name,
		"$JS.API.CONSUMER.DURABLE.CREATE." + bus.StreamCommands + "." + name,
	} {
		if r, err := s1.NC.RequestWithContext(short(), subject, body); err == nil {
			t.Logf("%s: %s", subject, r.Data)
		}
	}

	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand("s3", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Send(ctx, env); err != nil {
		t.Fatal(err)
	}
	// What s1's consumer hands it.
	if cons, err := s1.JS.Consumer(short(), bus.StreamCommands, name); err == nil {
		if batch, err := cons.Fetch(4, jetstream.FetchMaxWait(time.Second)); err == nil {
			for m := range batch.Messages() {
				t.Errorf("agent s1 read a command on %s", m.Subject())
			}
		}
	}

	s3 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s3"})
	ran := runAgent(t, s3, "s3", "real", zerolog.Nop())
	type outcome struct {
		res *events.Result
		err error
	}
	got := make(chan outcome, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		res, err := client.WaitResult(wctx, "s3", env.ID, nil)
		got <- outcome{res, err}
	}()
	select {
	case err := <-ran:
		t.Fatalf("s3's agent could not start: %v", err)
	case o := <-got:
		if o.err != nil {
			t.Fatalf("s3's command was not answered: %v", o.err)
		}
		if p := pongOf(t, o.res); p.Server != "s3" || p.Note != "real" {
			t.Errorf("answered by %+v, want s3's agent", p)
		}
	}
}

// TestAgentCannotCaptureReplies (issue 23, attack 7): agent s1 makes (or
// remakes) the stream of its backups store to store every reply and every
// query on the bus. Nothing captures them: `ping s2` is still answered by
// s2, and s1's backups store keeps its own subjects.
func TestAgentCannotCaptureReplies(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 60*time.Second)
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	runAgent(t, s2, "s2", "real", zerolog.Nop())
	client := bus.NewClient(admin, "cli")
	ping := func() (events.Pong, error) {
		env, err := client.NewCommand("s2", events.TypePing, "", events.Ping{})
		if err != nil {
			return events.Pong{}, err
		}
		res, err := client.Query(short(), env)
		if err != nil {
			return events.Pong{}, err
		}
		return pongOf(t, res), nil
	}
	testutil.Eventually(t, 10*time.Second, func() bool { _, err := ping(); return err == nil }, "s2 never answered a ping")

	stream := "OBJ_" + bus.BackupsBucket("s1")
	rogue := jetstream.StreamConfig{Name: stream, Subjects: []string{"_INBOX.>", bus.Prefix + ".query.>"}, Storage: jetstream.MemoryStorage}
	if _, err := s1.JS.CreateStream(short(), rogue); err == nil {
		t.Log("agent s1 made the rogue stream")
	}
	if _, err := s1.JS.UpdateStream(short(), rogue); err == nil {
		t.Log("agent s1 updated its store into the rogue stream")
	}

	for i := range 3 {
		p, err := ping()
		if err != nil {
			t.Fatalf("ping s2 #%d: %v", i+1, err)
		}
		if p.Server != "s2" || p.Note != "real" {
			t.Fatalf("ping s2 #%d answered by %+v", i+1, p)
		}
	}
	for _, subject := range []string{"_INBOX.x", bus.QuerySubject("s2", events.TypePing)} {
		if name, err := admin.JS.StreamNameBySubject(ctx, subject); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("stream %q stores %s (%v)", name, subject, err)
		}
	}
	if st, err := admin.JS.Stream(ctx, stream); err == nil {
		want := []string{"$O." + bus.BackupsBucket("s1") + ".C.>", "$O." + bus.BackupsBucket("s1") + ".M.>"}
		if got := st.CachedInfo().Config.Subjects; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("s1's backups store stores %v, want %v", got, want)
		}
	}
}

// TestAnotherAgentCannotSuppressAResult (issue 23, attack 9): agent s1
// publishes on its own result subject, under the message ids s3's result
// could be stored with, for s3's command. s3's real result still reaches the
// waiting client.
func TestAnotherAgentCannotSuppressAResult(t *testing.T) {
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
	for _, msgID := range []string{"result-" + id, "result-s3-" + id, "result.s3." + id, id} {
		m := nats.NewMsg(bus.ResultSubject("s1", id))
		m.Data = []byte(`{"forged":true}`)
		m.Header.Set(nats.MsgIdHdr, msgID)
		if _, err := s1.JS.PublishMsg(ctx, m); err != nil {
			t.Fatalf("agent s1 cannot publish on its own result subject: %v", err)
		}
	}
	runAgent(t, s3, "s3", "real", zerolog.Nop())
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := client.Do(dctx, bus.Call{Envelope: env})
	if err != nil {
		t.Fatalf("s3's result did not reach the client: %v", err)
	}
	if p := pongOf(t, res); p.Server != "s3" || p.Note != "real" {
		t.Errorf("took %+v, want s3's real answer", p)
	}
}

// TestAgentWaitsForItsConsumer: on a bus with authentication an agent makes
// no consumer. Started before the bus's server made its own, it says so with
// the fix and waits; once made, it answers what was queued meanwhile.
func TestAgentWaitsForItsConsumer(t *testing.T) {
	a, err := bus.LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := bus.StartServer(bus.ServerOptions{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Authority: a})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	admin := connectAs(t, ns.ClientURL(), a, bus.Role{Kind: "admin"})
	ctx := ctxT(t, 60*time.Second)
	if err := bus.Ensure(ctx, admin.JS, 1); err != nil {
		t.Fatal(err)
	}
	s4 := connectAs(t, ns.ClientURL(), a, bus.Role{Kind: "agent", Server: "s4"})
	var logs testutil.LogBuffer
	runAgent(t, s4, "s4", "real", zerolog.New(&logs))
	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand("s4", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Send(ctx, env); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "waiting for this server's command consumer")
	}, "the agent never said it waits for its consumer")
	if !strings.Contains(logs.String(), "skein creds agent s4") {
		t.Errorf("the agent's log names no fix: %s", logs.String())
	}
	if _, err := admin.JS.Consumer(ctx, bus.StreamCommands, bus.AgentConsumerName("s4")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("agent s4's consumer exists before the server made it: %v", err)
	}

	if err := bus.ProvisionRoles(ctx, admin.JS, a.Issued()); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	res, err := client.WaitResult(wctx, "s4", env.ID, nil)
	if err != nil {
		t.Fatalf("the command queued while the agent waited was not answered: %v", err)
	}
	if p := pongOf(t, res); p.Server != "s4" {
		t.Errorf("answered by %+v", p)
	}
}

// TestProvisionPutsBackWhatDiffers: a command consumer pointed at another
// server's commands and a backups store given the bus's replies (made before
// agents lost those verbs) are put back by the server's provisioning.
func TestProvisionPutsBackWhatDiffers(t *testing.T) {
	admin, _, _ := testutil.AuthBus(t)
	ctx := ctxT(t, 30*time.Second)
	if _, err := admin.JS.CreateOrUpdateConsumer(ctx, bus.StreamCommands, jetstream.ConsumerConfig{
		Durable: bus.AgentConsumerName("s1"), FilterSubject: bus.ServerCommands("s3"), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.JS.CreateOrUpdateObjectStore(ctx, bus.BackupsStoreConfig("s1")); err != nil {
		t.Fatal(err)
	}
	stream := "OBJ_" + bus.BackupsBucket("s1")
	st, err := admin.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	want := cfg.Subjects
	cfg.Subjects = []string{"_INBOX.>", bus.Prefix + ".query.>"}
	if _, err := admin.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	if err := bus.ProvisionRoles(ctx, admin.JS, []bus.Role{{Kind: "agent", Server: "s1"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := admin.JS.Consumer(ctx, bus.StreamCommands, bus.AgentConsumerName("s1"))
	if err != nil {
		t.Fatal(err)
	}
	if f := cons.CachedInfo().Config.FilterSubject; f != bus.ServerCommands("s1") {
		t.Errorf("s1's consumer takes %s", f)
	}
	st, err = admin.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.Subjects; !slices.Equal(got, want) {
		t.Errorf("s1's backups store stores %v, want %v", got, want)
	}
	// Made with nats.go's config, which takes rollups: no longer.
	if st.CachedInfo().Config.AllowRollup {
		t.Error("s1's backups store takes rollups")
	}
}

// TestFollowAuthorityAppliesRevocations: the server following the authority
// refuses a revoked agent from then on, whether `skein creds revoke` ran in
// another process (the ledger changed on disk) or in this one; the agents
// not revoked keep working.
func TestFollowAuthorityAppliesRevocations(t *testing.T) {
	dir := t.TempDir()
	a, err := bus.LoadAuthority(dir)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := bus.StartServer(bus.ServerOptions{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Authority: a})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	admin := connectAs(t, ns.ClientURL(), a, bus.Role{Kind: "admin"})
	ctx := ctxT(t, 60*time.Second)
	if err := bus.Ensure(ctx, admin.JS, 1); err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(context.Background())
	followed := make(chan struct{})
	go func() { defer close(followed); bus.FollowAuthority(fctx, a, ns, admin.JS, zerolog.Nop()) }()
	t.Cleanup(func() { stop(); <-followed })
	s5 := connectAs(t, ns.ClientURL(), a, bus.Role{Kind: "agent", Server: "s5"})
	s6 := connectAs(t, ns.ClientURL(), a, bus.Role{Kind: "agent", Server: "s6"})
	s7 := connectAs(t, ns.ClientURL(), a, bus.Role{Kind: "agent", Server: "s7"})
	works := func(c *bus.Conn, server string) bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := c.JS.Publish(pctx, bus.EventSubject(server, "probe"), []byte("{}"))
		return err == nil
	}
	for _, s := range []struct {
		c    *bus.Conn
		name string
	}{{s5, "s5"}, {s6, "s6"}, {s7, "s7"}} {
		if !works(s.c, s.name) {
			t.Fatalf("agent %s does not work before any revocation", s.name)
		}
	}

	// Another process: `skein creds revoke agent s5` on the same ledger.
	other, err := bus.LoadAuthority(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Revoke(bus.Role{Kind: "agent", Server: "s5"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return !works(s5, "s5") }, "agent s5, revoked in another process, still works")
	// This process.
	if _, err := a.Revoke(bus.Role{Kind: "agent", Server: "s6"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return !works(s6, "s6") }, "agent s6, revoked in this process, still works")
	if !works(s7, "s7") {
		t.Error("agent s7, not revoked, stopped working")
	}
}
