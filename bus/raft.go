package bus

import (
	"fmt"
	"sync"
	"time"
	_ "unsafe" // go:linkname to nats-server's Raft timings

	_ "github.com/nats-io/nats-server/v2/server"
)

// nats-server's Raft timings: package variables with no option to set them
// in any release up to v2.15 (server/raft.go). A leader lost is replaced
// only after a follower's election timeout, 4-9 s by default; skein's NATS
// nodes (`skein nats`) run small clusters on one LAN and shorten it. These
// names fail the link when nats-server no longer has them, and
// TestRaftDefaultsAreNATSServers fails when their defaults change.
//
//go:linkname raftMinElection github.com/nats-io/nats-server/v2/server.minElectionTimeout
var raftMinElection time.Duration

//go:linkname raftMaxElection github.com/nats-io/nats-server/v2/server.maxElectionTimeout
var raftMaxElection time.Duration

//go:linkname raftHeartbeat github.com/nats-io/nats-server/v2/server.hbInterval
var raftHeartbeat time.Duration

//go:linkname raftLostQuorum github.com/nats-io/nats-server/v2/server.lostQuorumInterval
var raftLostQuorum time.Duration

//go:linkname raftLostQuorumCheck github.com/nats-io/nats-server/v2/server.lostQuorumCheck
var raftLostQuorumCheck time.Duration

//go:linkname raftMinCampaign github.com/nats-io/nats-server/v2/server.minCampaignTimeout
var raftMinCampaign time.Duration

//go:linkname raftMaxCampaign github.com/nats-io/nats-server/v2/server.maxCampaignTimeout
var raftMaxCampaign time.Duration

// RaftTimings are the Raft timings of a NATS node.
type RaftTimings struct {
	// MinElection and MaxElection bound a follower's wait for its leader's
	// heartbeat before it stands for election (drawn at random between).
	MinElection, MaxElection time.Duration
	// Heartbeat is how often a leader tells its followers it is there.
	Heartbeat time.Duration
	// LostQuorum is how long a leader goes without hearing from a quorum
	// before it steps down; LostQuorumCheck how often it looks.
	LostQuorum, LostQuorumCheck time.Duration
	// MinCampaign and MaxCampaign bound the wait of a follower asked to
	// stand at once: one that refused a vote for a candidate less up to
	// date than itself, or one whose leader's routes all closed
	// (CampaignOnPeerLoss).
	MinCampaign, MaxCampaign time.Duration
}

// SkeinRaft are the timings of skein's NATS nodes: a leader lost is
// replaced in 1-2 s. A heartbeat every 250 ms keeps four of them inside
// the shortest election timeout, as nats-server's 1 s keeps four inside 4 s:
// a follower stands only after missing four beats in a row (a CPU stall or
// a lossy LAN of under a second costs no election). The quorum checks keep
// nats-server's ratio to the heartbeat (10×), the campaigns theirs to the
// election (a fortieth to a tenth of the shortest: 25-200 ms).
var SkeinRaft = RaftTimings{
	MinElection: time.Second, MaxElection: 2 * time.Second,
	Heartbeat:  250 * time.Millisecond,
	LostQuorum: 2500 * time.Millisecond, LostQuorumCheck: 2500 * time.Millisecond,
	MinCampaign: 25 * time.Millisecond, MaxCampaign: 200 * time.Millisecond,
}

var raftMu sync.Mutex

// CurrentRaft are the Raft timings this process's NATS nodes use.
func CurrentRaft() RaftTimings {
	raftMu.Lock()
	defer raftMu.Unlock()
	return RaftTimings{raftMinElection, raftMaxElection, raftHeartbeat, raftLostQuorum, raftLostQuorumCheck, raftMinCampaign, raftMaxCampaign}
}

// SetRaft makes t the Raft timings of every NATS node this process starts
// from now on (the variables are the package's, read as nodes run): call
// it before starting one.
func SetRaft(t RaftTimings) error {
	if t.Heartbeat <= 0 || t.MinElection < 2*t.Heartbeat || t.MaxElection <= t.MinElection || t.LostQuorum < t.MinElection || t.LostQuorumCheck <= 0 ||
		t.MinCampaign <= 0 || t.MaxCampaign <= t.MinCampaign || t.MaxCampaign >= t.MinElection {
		return fmt.Errorf("bus: Raft timings %v: want heartbeat > 0, election ≥ 2 heartbeats, max > min, lost quorum ≥ min election, its check > 0, 0 < min campaign < max campaign < min election", t)
	}
	raftMu.Lock()
	defer raftMu.Unlock()
	raftMinElection, raftMaxElection, raftHeartbeat = t.MinElection, t.MaxElection, t.Heartbeat
	raftLostQuorum, raftLostQuorumCheck = t.LostQuorum, t.LostQuorumCheck
	raftMinCampaign, raftMaxCampaign = t.MinCampaign, t.MaxCampaign
	return nil
}

// Tag names the timings in a word, so that every node of a cluster can
// be required to use the same (see ClusterName): the election's and the
// heartbeat's, which nodes must agree on (a campaign's wait is a node's own).
func (t RaftTimings) Tag() string {
	return fmt.Sprintf("e%d-%dhb%d", t.MinElection.Milliseconds(), t.MaxElection.Milliseconds(), t.Heartbeat.Milliseconds())
}

// ClusterName is the cluster name a skein NATS node announces for the
// name the configuration gives: the timings' tag appended, so that a node
// with other timings (another skein, or a stock nats-server) is refused by
// the others as of another cluster ("cluster name does not match"),
// instead of calling elections on its own clock.
func ClusterName(configured string, t RaftTimings) string {
	return configured + "_raft_" + t.Tag()
}
