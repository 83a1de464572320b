package bus_test

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/testutil"
)

// jsTarget is a stream the JetStream API subjects are tried on, with the
// consumers tried on it.
type jsTarget struct {
	stream    string
	consumers []string
}

// jsTargets are skein's streams (the KV buckets' and object stores' among
// them, s1's and s2's backups stores) and one skein never makes.
func jsTargets() []jsTarget {
	commands := []string{bus.AgentConsumerName("s1"), bus.AgentConsumerName("s2"), bus.AgentConsumerName(bus.SchedulerName)}
	out := []jsTarget{{bus.StreamCommands, commands}, {bus.StreamResults, []string{"c"}}, {bus.StreamEvents, []string{"c"}}}
	for _, b := range bus.BucketConfigs(1) {
		out = append(out, jsTarget{"KV_" + b.Bucket, []string{"c"}})
	}
	for _, s := range []string{"OBJ_" + bus.ImagesBucket, "OBJ_" + bus.BackupsBucket("s1"), "OBJ_" + bus.BackupsBucket("s2"), "ROGUE"} {
		out = append(out, jsTarget{s, []string{"c"}})
	}
	return out
}

// The JetStream API verbs nats-server offers (its jsapi constants), by what they name.
var (
	accountVerbs = []string{server.JSApiAccountInfo, server.JSApiStreams, server.JSApiStreamList, server.JSApiLeaderStepDown,
		server.JSApiRemoveServer, server.JSApiEvacuateServer, server.JSApiMetaRescue,
		fmt.Sprintf(server.JSApiAccountPurgeT, bus.AccountName),
		fmt.Sprintf(server.JSApiServerStreamMoveT, bus.StreamCommands, "x"), fmt.Sprintf(server.JSApiServerStreamCancelMoveT, bus.StreamCommands, "x")}
	streamVerbs = []string{server.JSApiStreamCreateT, server.JSApiStreamUpdateT, server.JSApiStreamInfoT, server.JSApiStreamDeleteT,
		server.JSApiStreamPurgeT, server.JSApiStreamSnapshotT, server.JSApiStreamRestoreT, server.JSApiMsgDeleteT, server.JSApiMsgGetT,
		server.JSDirectMsgGetT, server.JSApiStreamRemovePeerT, server.JSApiStreamEvacuatePeerT, server.JSApiStreamCancelMoveT,
		server.JSApiStreamLeaderStepDownT, server.JSApiConsumerCreateT, server.JSApiConsumersT, server.JSApiConsumerListT}
	consumerVerbs = []string{server.JSApiDurableCreateT, server.JSApiConsumerInfoT, server.JSApiConsumerDeleteT,
		server.JSApiConsumerPauseT, server.JSApiConsumerUnpinT, server.JSApiConsumerResetT, server.JSApiRequestNextT,
		server.JSApiConsumerLeaderStepDownT, server.JSApiConsumerRemovePeerT, server.JSApiConsumerEvacuatePeerT,
		"$JS.API.CONSUMER.CREATE.%s.%s", "$JS.ACK.%s.%s.1.1.1.1.1", "$JS.FC.%s.%s.1"}
)

// jsSubjects are every JetStream API subject of the targets, and the KV and
// object store subjects of every bucket, for servers s1 and s2, the
// scheduler and the jobs.
func jsSubjects() []string {
	out := append([]string(nil), accountVerbs...)
	for _, t := range jsTargets() {
		for _, v := range streamVerbs {
			out = append(out, fmt.Sprintf(v, t.stream))
		}
		out = append(out, fmt.Sprintf(server.JSDirectGetLastBySubjectT, t.stream, "x"))
		for _, c := range t.consumers {
			for _, v := range consumerVerbs {
				out = append(out, fmt.Sprintf(v, t.stream, c))
			}
			out = append(out, fmt.Sprintf(server.JSApiConsumerCreateExT, t.stream, c, "x"))
		}
	}
	for _, b := range bus.BucketConfigs(1) {
		for _, key := range []string{"s1.x", "s2.x", bus.SchedulerName + ".x", "job.x", "scheduler.x"} {
			out = append(out, "$KV."+b.Bucket+"."+key)
		}
	}
	out = append(out, "$KV.skein_servers.s1", "$KV.skein_servers.s2")
	for _, o := range []string{bus.ImagesBucket, bus.BackupsBucket("s1"), bus.BackupsBucket("s2")} {
		out = append(out, "$O."+o+".C.x", "$O."+o+".M.x")
	}
	return out
}

// jsAllowed is what a role may do with the JetStream API, KV and object
// stores, in words a reader checks against the README: the table below.
type jsAllowed struct {
	// consume is the command consumer it consumes (info, next, ack), "" for none.
	consume string
	// readConsumers are the streams it may make, look at and delete consumers
	// of (CREATE, INFO, DELETE, PAUSE, UNPIN, RESET): to watch and read them.
	readConsumers []string
	// eventConsumers: make and delete consumers of the events stream only.
	eventConsumers bool
	// keys are the KV and object subjects it may write.
	keys []string
	// readsCommands: it may get messages of the commands stream.
	readsCommands bool
}

// allowed expands a role's table row into the subjects it may publish:
// what every role may (the account's and streams' info, reading messages,
// flow control) and what the row adds.
func (a jsAllowed) allowed() map[string]bool {
	out := map[string]bool{server.JSApiAccountInfo: true, server.JSApiStreams: true, server.JSApiStreamList: true}
	for _, t := range jsTargets() {
		out[fmt.Sprintf(server.JSApiStreamInfoT, t.stream)] = true
		if t.stream != bus.StreamCommands || a.readsCommands {
			for _, v := range []string{server.JSApiMsgGetT, server.JSDirectMsgGetT} {
				out[fmt.Sprintf(v, t.stream)] = true
			}
			out[fmt.Sprintf(server.JSDirectGetLastBySubjectT, t.stream, "x")] = true
		}
		for _, c := range t.consumers {
			out["$JS.FC."+t.stream+"."+c+".1"] = true
		}
	}
	if a.consume != "" {
		for _, v := range []string{server.JSApiConsumerInfoT, server.JSApiRequestNextT, "$JS.ACK.%s.%s.1.1.1.1.1"} {
			out[fmt.Sprintf(v, bus.StreamCommands, a.consume)] = true
		}
	}
	for _, s := range a.readConsumers {
		for _, v := range []string{"$JS.API.CONSUMER.CREATE.%s.%s", server.JSApiConsumerInfoT, server.JSApiConsumerDeleteT,
			server.JSApiConsumerPauseT, server.JSApiConsumerUnpinT, server.JSApiConsumerResetT} {
			out[fmt.Sprintf(v, s, "c")] = true
		}
		out[fmt.Sprintf(server.JSApiConsumerCreateExT, s, "c", "x")] = true
	}
	if a.eventConsumers {
		out[fmt.Sprintf("$JS.API.CONSUMER.CREATE.%s.%s", bus.StreamEvents, "c")] = true
		out[fmt.Sprintf(server.JSApiConsumerCreateExT, bus.StreamEvents, "c", "x")] = true
		out[fmt.Sprintf(server.JSApiConsumerDeleteT, bus.StreamEvents, "c")] = true
	}
	for _, k := range a.keys {
		out[k] = true
	}
	return out
}

// kvStreams are the KV buckets' streams and the images store's: every role reads them.
func kvStreams() []string {
	out := []string{"OBJ_" + bus.ImagesBucket}
	for _, b := range bus.BucketConfigs(1) {
		out = append(out, "KV_"+b.Bucket)
	}
	return out
}

// keysOf are the subjects of owner's keys in every bucket.
func keysOf(owner string) []string {
	var out []string
	for _, b := range bus.BucketConfigs(1) {
		out = append(out, "$KV."+b.Bucket+"."+owner+".x")
	}
	return out
}

// TestJetStreamAPIPermissions (issue 23): every JetStream API subject
// nats-server offers, on every skein stream, consumer, KV bucket and object
// store, tried as agent s1, the scheduler and the observer with their real
// credentials against a real server. What each may publish is exactly its
// row of the table: no role may make, change, delete or purge a stream, or
// make or change a command consumer (their config says what they store and
// whose commands they take), and a new permission cannot slip in unseen.
func TestJetStreamAPIPermissions(t *testing.T) {
	url, a := authBus(t)
	table := []struct {
		role  bus.Role
		allow jsAllowed
	}{
		{bus.Role{Kind: "agent", Server: "s1"}, jsAllowed{
			consume:       bus.AgentConsumerName("s1"),
			readConsumers: append(kvStreams(), "OBJ_"+bus.BackupsBucket("s1")),
			// Its own keys in every bucket but the jobs and the scheduler's lease.
			keys: append(slices.DeleteFunc(keysOf("s1"), func(k string) bool {
				return strings.HasPrefix(k, "$KV.skein_jobs.") || strings.HasPrefix(k, "$KV.skein_leader.")
			}), "$KV.skein_servers.s1", "$O."+bus.BackupsBucket("s1")+".C.x", "$O."+bus.BackupsBucket("s1")+".M.x"),
		}},
		{bus.Role{Kind: "scheduler"}, jsAllowed{
			consume:       bus.AgentConsumerName(bus.SchedulerName),
			readConsumers: append(kvStreams(), bus.StreamResults, bus.StreamEvents),
			keys:          append(keysOf(bus.SchedulerName), "$KV.skein_jobs.job.x", "$KV.skein_leader.scheduler.x"),
			readsCommands: true,
		}},
		{bus.Role{Kind: "observer"}, jsAllowed{readConsumers: kvStreams(), eventConsumers: true}},
	}
	subjects := jsSubjects()
	for _, row := range table {
		t.Run(row.role.Name(), func(t *testing.T) {
			denied := tryPublish(t, url, a, row.role, subjects)
			want := row.allow.allowed()
			var slipped, lost []string
			for _, s := range subjects {
				switch {
				case !denied[s] && !want[s]:
					slipped = append(slipped, s)
				case denied[s] && want[s]:
					lost = append(lost, s)
				}
			}
			for s := range want {
				if !slices.Contains(subjects, s) {
					t.Errorf("the table allows %s, which the test never tries", s)
				}
			}
			sort.Strings(slipped)
			sort.Strings(lost)
			if len(slipped) > 0 {
				t.Errorf("%s may publish %d subjects its row does not allow:\n  %s", row.role.Name(), len(slipped), strings.Join(slipped, "\n  "))
			}
			if len(lost) > 0 {
				t.Errorf("%s may not publish %d subjects its row allows:\n  %s", row.role.Name(), len(lost), strings.Join(lost, "\n  "))
			}
			t.Logf("%s: %d of %d subjects allowed", row.role.Name(), len(subjects)-len(denied), len(subjects))
		})
	}
}

// tryPublish publishes on every subject (no reply: nothing is answered) as
// role, with new credentials, and returns those the server refused.
func tryPublish(t *testing.T, url string, a *bus.Authority, role bus.Role, subjects []string) map[string]bool {
	t.Helper()
	creds, err := a.Creds(role)
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/role.creds"
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	denied := map[string]bool{}
	nc, err := nats.Connect(url, nats.UserCredentials(path), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		// Permissions Violation for Publish to "SUBJECT"
		_, subject, ok := strings.Cut(err.Error(), `Publish to "`)
		if !ok {
			return
		}
		subject, _, _ = strings.Cut(subject, `"`)
		mu.Lock()
		denied[subject] = true
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Every role is denied this; the server answers in order, so once it is
	// told, every refusal before it is.
	const sentinel = "skein.sentinel.denied"
	for _, s := range append(subjects, sentinel) {
		if err := nc.Publish(s, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return denied[sentinel]
	}, "the server never refused %s", sentinel)
	mu.Lock()
	defer mu.Unlock()
	delete(denied, sentinel)
	return denied
}
