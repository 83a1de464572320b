package bus

import (
	"testing"
	"time"
)

// TestRaftDefaultsAreNATSServers: what SetRaft changes holds nats-server's
// own defaults until then (server/raft.go). It fails when nats-server's
// timings change name, type or value: SkeinRaft is then to be judged again
// against them (a name gone fails the link first).
func TestRaftDefaultsAreNATSServers(t *testing.T) {
	want := RaftTimings{MinElection: 4 * time.Second, MaxElection: 9 * time.Second, Heartbeat: time.Second,
		LostQuorum: 10 * time.Second, LostQuorumCheck: 10 * time.Second,
		MinCampaign: 100 * time.Millisecond, MaxCampaign: 800 * time.Millisecond}
	if got := CurrentRaft(); got != want {
		t.Fatalf("nats-server's Raft timings are %+v, not %+v: look again at SkeinRaft", got, want)
	}
}

// TestSetRaftRefusesTimingsThatElectForNothing: an election timeout under
// two heartbeats would have followers stand while their leader is there.
func TestSetRaftRefusesTimingsThatElectForNothing(t *testing.T) {
	before := CurrentRaft()
	for _, bad := range []RaftTimings{
		{MinElection: 400 * time.Millisecond, MaxElection: time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: time.Second, LostQuorumCheck: 2 * time.Second},
		{MinElection: 2 * time.Second, MaxElection: time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 2 * time.Second, LostQuorumCheck: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 0, LostQuorum: 2 * time.Second, LostQuorumCheck: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 500 * time.Millisecond, LostQuorumCheck: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 2 * time.Second, LostQuorumCheck: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 2 * time.Second, LostQuorumCheck: 2 * time.Second, MinCampaign: 25 * time.Millisecond, MaxCampaign: time.Second},
	} {
		if err := SetRaft(bad); err == nil {
			t.Errorf("SetRaft(%+v) took it", bad)
		}
	}
	if got := CurrentRaft(); got != before {
		t.Fatalf("a refused SetRaft changed the timings to %+v", got)
	}
}

// TestClusterNameCarriesTheTimings: nodes with other timings announce
// another cluster name, which NATS refuses routes from.
func TestClusterNameCarriesTheTimings(t *testing.T) {
	a := ClusterName("skein", SkeinRaft)
	other := SkeinRaft
	other.MaxElection = 3 * time.Second
	if a == ClusterName("skein", other) || a == "skein" {
		t.Fatalf("cluster names %q and %q do not tell the timings apart", a, ClusterName("skein", other))
	}
	if a != "skein_raft_e1000-2000hb250" {
		t.Fatalf("cluster name %q", a)
	}
}
