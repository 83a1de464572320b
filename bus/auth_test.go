package bus_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// authBus starts a server that trusts a fresh authority, with skein's streams
// made by an admin, and returns its URL and the authority.
func authBus(t *testing.T) (string, *bus.Authority) {
	t.Helper()
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
	ctx := ctxT(t, 20*time.Second)
	if err := bus.Ensure(ctx, admin.JS, 1); err != nil {
		t.Fatal(err)
	}
	// As `skein server` does: each role's consumers and stores, made as it is issued.
	fctx, stop := context.WithCancel(context.Background())
	followed := make(chan struct{})
	go func() { defer close(followed); bus.FollowAuthority(fctx, a, ns, admin.JS, zerolog.Nop()) }()
	t.Cleanup(func() { stop(); <-followed })
	return ns.ClientURL(), a
}

func connectAs(t *testing.T, url string, a *bus.Authority, r bus.Role) *bus.Conn {
	t.Helper()
	creds, err := a.Creds(r)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bus.Connect(bus.ConnOptions{URL: url, Name: r.Name(), Log: zerolog.Nop(), Creds: creds})
	if err != nil {
		t.Fatalf("%s: %v", r.Name(), err)
	}
	t.Cleanup(conn.Close)
	return conn
}

func TestAnonymousClientIsRefused(t *testing.T) {
	url, _ := authBus(t)
	_, err := nats.Connect(url)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous connect = %v, want an authorization error", err)
	}
}

// TestAgentIsHeldToItsServer: agent s2 cannot command s1, answer or tell for
// s1, or write s1's heartbeat or records; it can do all that for s2.
func TestAgentIsHeldToItsServer(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 30*time.Second)

	heartbeats, err := bus.OpenStore[events.Heartbeat](ctx, admin.JS)
	if err != nil {
		t.Fatal(err)
	}
	hb := events.Heartbeat{Name: "s1", Status: "up", CPUs: 2, Time: time.Now().UTC()}
	if _, err := heartbeats.Put(ctx, "s1", hb); err != nil {
		t.Fatal(err)
	}
	lbs, err := bus.OpenStore[events.LB](ctx, s2.JS)
	if err != nil {
		t.Fatalf("agent s2 cannot open a store: %v", err)
	}
	s2heartbeats, err := bus.OpenStore[events.Heartbeat](ctx, s2.JS)
	if err != nil {
		t.Fatal(err)
	}
	rec := events.LB{Resource: events.Resource{Name: "ha1", Server: "s1", Status: events.StatusReady, Updated: time.Now().UTC()}, Kind: "haproxy", Backends: []events.Backend{}}
	mine := rec
	mine.Server, mine.Name = "s2", "ha2"

	denied := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("agent s2 could %s", what)
		}
	}
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	_, err = s2.JS.Publish(short(), bus.CommandSubject("s1", events.TypeStop), []byte("{}"))
	denied("publish a command for s1", err)
	_, err = s2.JS.Publish(short(), bus.ResultSubject("s1", "x"), []byte("{}"))
	denied("publish a result for s1", err)
	_, err = s2.JS.Publish(short(), bus.EventSubject("s1", events.TypeContainerStarted), []byte("{}"))
	denied("publish an event about s1", err)
	_, err = s2heartbeats.Put(short(), "s1", events.Heartbeat{Name: "s1", Status: "down", CPUs: 1, Time: time.Now().UTC()})
	denied("write s1's heartbeat", err)
	_, err = lbs.Create(short(), bus.Key("s1", "ha1"), rec)
	denied("write a record of s1", err)

	// Only the results stream speaks on the stored-result subjects, its own
	// server's included: a waiting client takes what comes there.
	for _, subject := range []string{bus.StoredResultSubject("s1", "x"), bus.StoredResultSubject("s2", "x")} {
		_ = s2.NC.Publish(subject, []byte("{}"))
		_ = s2.NC.Flush()
		if le := s2.NC.LastError(); le == nil || !strings.Contains(le.Error(), subject) {
			t.Errorf("agent s2 could publish on %s (last error: %v)", subject, le)
		}
	}

	// Its own share works.
	if _, err := s2.JS.Publish(short(), bus.ResultSubject("s2", "x"), []byte("{}")); err != nil {
		t.Errorf("agent s2 cannot publish its own result: %v", err)
	}
	// And hears JetStream acknowledge storing it, as its waiting client does.
	out, err := bus.NewResultPublisher(s2, "s2")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Publish(short(), "y", []byte("{}")); err != nil {
		t.Errorf("agent s2 is not told its result is stored: %v", err)
	}
	if _, err := s2.JS.Publish(short(), bus.EventSubject("s2", events.TypeContainerStarted), []byte("{}")); err != nil {
		t.Errorf("agent s2 cannot publish its own event: %v", err)
	}
	if _, err := lbs.Create(short(), bus.Key("s2", "ha2"), mine); err != nil {
		t.Errorf("agent s2 cannot write its own record: %v", err)
	}
	if _, err := s2heartbeats.Put(short(), "s2", events.Heartbeat{Name: "s2", Status: "up", CPUs: 1, Time: time.Now().UTC()}); err != nil {
		t.Errorf("agent s2 cannot beat: %v", err)
	}
	// And s1's state is as it was.
	got, err := heartbeats.Get(ctx, "s1")
	if err != nil || got.Value.Status != "up" {
		t.Errorf("s1's heartbeat = %+v %v", got.Value, err)
	}
	if e, _ := lbs.Find(ctx, bus.Key("s1", "ha1")); e != nil {
		t.Errorf("a record of s1 was written by s2: %+v", e.Value)
	}
}

func TestObserverReadsAndPublishesNothing(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	obs := connectAs(t, url, a, bus.Role{Kind: "observer"})
	ctx := ctxT(t, 30*time.Second)
	var mu sync.Mutex
	var got []string
	sub, err := obs.NC.Subscribe(bus.AllEvents(), func(m *nats.Msg) { mu.Lock(); got = append(got, m.Subject); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = obs.NC.Flush()
	pub := bus.NewPublisher(admin.JS, "test", "s1")
	if err := pub.Publish(ctx, events.TypeServerUp, events.ServerEvent{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the observer saw no event")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It reads state.
	st, err := bus.OpenStore[events.Heartbeat](ctx, obs.JS)
	if err != nil {
		t.Fatalf("the observer cannot open a store: %v", err)
	}
	if _, err := st.List(ctx); err != nil {
		t.Errorf("the observer cannot list: %v", err)
	}
	// It publishes nothing.
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := obs.JS.Publish(short, bus.EventSubject("s1", events.TypeServerUp), []byte("{}")); err == nil {
		t.Error("the observer published an event")
	}
	if _, err := st.Put(short, "s1", events.Heartbeat{Name: "s1", Status: "up", CPUs: 1, Time: time.Now().UTC()}); err == nil {
		t.Error("the observer wrote a heartbeat")
	}
	if _, err := obs.JS.Publish(short, bus.CommandSubject("s1", events.TypePing), []byte("{}")); err == nil {
		t.Error("the observer sent a command")
	}
}

// TestNATSConfigMakesAnExternalServerTrustTheAuthority: a nats-server started
// from the exported configuration refuses anonymous clients and takes skein's
// credentials, as the embedded one does.
func TestNATSConfigMakesAnExternalServerTrustTheAuthority(t *testing.T) {
	a, err := bus.LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conf, err := a.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/auth.conf"
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:-1\njetstream { store_dir: "+strconvQuote(t.TempDir())+" }\n"+conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("the exported configuration does not parse: %v\n%s", err, conf)
	}
	opts.NoSigs, opts.Port = true, -1
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	if _, err := nats.Connect(ns.ClientURL()); err == nil {
		t.Fatal("an anonymous client connected")
	}
	creds, err := a.Creds(bus.Role{Kind: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bus.Connect(bus.ConnOptions{URL: ns.ClientURL(), Log: zerolog.Nop(), Creds: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := bus.Ensure(ctxT(t, 20*time.Second), conn.JS, 1); err != nil {
		t.Fatalf("JetStream under the exported authority: %v", err)
	}
}

func strconvQuote(s string) string { return strconv.Quote(s) }

// An agent reads the images store (to fetch an image its server lacks) and
// cannot write it.
func TestAgentReadsImagesAndCannotStoreThem(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 30*time.Second)
	image := bytes.Repeat([]byte("image "), 100000)
	aobs, err := admin.JS.ObjectStore(ctx, bus.ImagesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aobs.PutBytes(ctx, "skein-service", image); err != nil {
		t.Fatal(err)
	}
	obs, err := s2.JS.ObjectStore(ctx, bus.ImagesBucket)
	if err != nil {
		t.Fatalf("agent s2 cannot open the images store: %v", err)
	}
	got, err := obs.GetBytes(ctx, "skein-service")
	if err != nil || !bytes.Equal(got, image) {
		t.Fatalf("agent s2 reads %d bytes of %d: %v", len(got), len(image), err)
	}
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := obs.PutBytes(short, "skein-service", []byte("forged")); err == nil {
		t.Error("agent s2 replaced an image")
	}
	if got, _ := aobs.GetBytes(ctx, "skein-service"); !bytes.Equal(got, image) {
		t.Error("the stored image changed")
	}
}

// An agent writes and reads its own server's backups store, made by the
// bus's server as its credentials were issued, and neither makes nor changes
// a store, nor writes or reads another server's.
func TestAgentKeepsItsOwnBackups(t *testing.T) {
	url, a := authBus(t)
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 30*time.Second)
	dump := bytes.Repeat([]byte("INSERT INTO t VALUES (1);\n"), 20000)
	var obs2 jetstream.ObjectStore
	testutil.Eventually(t, 10*time.Second, func() bool {
		var err error
		obs2, err = s2.JS.ObjectStore(ctx, bus.BackupsBucket("s2"))
		return err == nil
	}, "the bus's server never made s2's backups store")
	if _, err := bus.PutBackup(ctx, s2.JS, bus.BackupsBucket("s2"), jetstream.ObjectMeta{Name: "db1.d.1"}, bytes.NewReader(dump)); err != nil {
		t.Fatalf("agent s2 cannot store a backup: %v", err)
	}
	if got, err := obs2.GetBytes(ctx, "db1.d.1"); err != nil || !bytes.Equal(got, dump) {
		t.Fatalf("agent s2 reads back %d bytes: %v", len(got), err)
	}
	if r, _, err := bus.GetBackup(ctx, s2.JS, bus.BackupsBucket("s2"), "db1.d.1"); err != nil {
		t.Fatalf("agent s2 cannot read a backup a chunk at a time: %v", err)
	} else if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, dump) {
		t.Fatalf("agent s2 reads back %d bytes a chunk at a time: %v", len(got), err)
	}
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for _, server := range []string{"s2", "s3"} {
		if _, err := s2.JS.CreateOrUpdateObjectStore(short, bus.BackupsStoreConfig(server)); err == nil {
			t.Errorf("agent s2 made or changed server %s's backups store", server)
		}
	}
	obs1, err := s2.JS.ObjectStore(short, bus.BackupsBucket("s1"))
	if err == nil {
		if _, err := bus.PutBackup(short, s2.JS, bus.BackupsBucket("s1"), jetstream.ObjectMeta{Name: "forged"}, strings.NewReader("x")); err == nil {
			t.Error("agent s2 wrote into s1's backups")
		}
		if _, err := obs1.GetBytes(short, "db1.d.1"); err == nil {
			t.Error("agent s2 read s1's backups")
		}
	}
	if _, err := s1.JS.ObjectStore(ctx, bus.BackupsBucket("s1")); err != nil {
		t.Errorf("agent s1 cannot open its backups store: %v", err)
	}
}

// A client sends its JWT in one control line, which NATS bounds (4 KiB by
// default, an external cluster's too): every role's must fit with room left.
func TestCredentialsFitAControlLine(t *testing.T) {
	_, a := authBus(t)
	for _, r := range []bus.Role{{Kind: "admin"}, {Kind: "observer"}, {Kind: "scheduler"}, {Kind: "agent", Server: "a-long-server-name-of-forty-characters-x"}} {
		creds, err := a.Creds(r)
		if err != nil {
			t.Fatal(err)
		}
		jwtLine := strings.SplitN(string(creds), "\n", 3)[1]
		if len(jwtLine) > 3600 {
			t.Errorf("%s's JWT is %d bytes: near NATS's 4096-byte control line", r.Kind, len(jwtLine))
		}
		t.Logf("%s JWT: %d bytes", r.Kind, len(jwtLine))
	}
}

// The scheduler writes jobs and its lease and sends commands to agents, but
// writes no agent's records, answers for no agent and changes no stream.
func TestSchedulerIsHeldToJobs(t *testing.T) {
	url, a := authBus(t)
	sc := connectAs(t, url, a, bus.Role{Kind: "scheduler"})
	ctx := ctxT(t, 30*time.Second)
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	jobs, err := bus.OpenStore[events.Job](ctx, sc.JS)
	if err != nil {
		t.Fatal(err)
	}
	job := events.Job{JobAdd: events.JobAdd{Name: "web", Image: "skein-busybox", Count: 1}, Version: 1, Created: time.Now().UTC(), Updated: time.Now().UTC()}
	if _, err := jobs.Put(ctx, bus.Key("job", "web"), job); err != nil {
		t.Errorf("the scheduler cannot write a job: %v", err)
	}
	if _, err := sc.JS.Publish(short(), bus.CommandSubject("s1", events.TypeStop), []byte("{}")); err != nil {
		t.Errorf("the scheduler cannot send a command to s1: %v", err)
	}
	ctrs, err := bus.OpenStore[events.Container](ctx, sc.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctrs.Put(short(), bus.Key("s1", "x"), events.Container{Name: "x", Server: "s1", Status: "Running", Updated: time.Now().UTC()}); err == nil {
		t.Error("the scheduler could write a container record of s1")
	} else {
		t.Logf("writing a container record of s1: %v", err)
	}
	if _, err := sc.JS.Publish(short(), bus.ResultSubject("s1", "x"), []byte("{}")); err == nil {
		t.Error("the scheduler could publish a result for s1")
	}
	if err := sc.JS.DeleteStream(short(), bus.StreamCommands); err == nil {
		t.Error("the scheduler could delete the commands stream")
	}
}

// TestCredentialsIssuedElsewhereAreKept: `skein creds` in one process and
// the running server in another (two authorities on one directory) issue
// and revoke at once; the ledger keeps every credential issued. Found by
// CI's TestFloatingIP: the server's own write of the ledger it had read at
// start dropped two agents issued meanwhile, whose consumers were then
// never made.
func TestCredentialsIssuedElsewhereAreKept(t *testing.T) {
	dir := t.TempDir()
	server, err := bus.LoadAuthority(dir)
	if err != nil {
		t.Fatal(err)
	}
	other, err := bus.LoadAuthority(dir)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := other.Creds(bus.Role{Kind: "agent", Server: fmt.Sprintf("v%d", i)}); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := server.Creds(bus.Role{Kind: "agent", Server: fmt.Sprintf("w%d", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := server.Revoke(bus.Role{Kind: "agent", Server: "w0"}); err != nil {
		t.Fatal(err)
	}
	fresh, err := bus.LoadAuthority(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fresh.Issued(); len(got) != 16 {
		t.Errorf("the ledger holds %d roles, want 16: %v", len(got), got)
	}
	if got := fresh.Revoked(); len(got) != 1 {
		t.Errorf("revoked %v, want w0's one credential", got)
	}
}
