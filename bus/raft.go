package bus

import (
	"context"
	"fmt"
	"sync"
	"time"
	_ "unsafe" // go:linkname to nats-server's Raft timings and nodes

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
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
	// MinCampaign and MaxCampaign bound nats-server's short waits: a
	// follower asked to stand (CampaignOnPeerLoss, or one that refused a
	// candidate less up to date than itself), a new group's vote resends.
	MinCampaign, MaxCampaign time.Duration
}

// SkeinRaft are the timings of skein's NATS nodes: a leader lost is
// replaced in 1-2 s. A heartbeat every 250 ms keeps four of them inside
// the shortest election timeout, as nats-server's 1 s keeps four inside 4 s:
// a follower stands only after missing four beats in a row (a CPU stall or
// a lossy LAN of under a second costs no election). The quorum checks keep
// nats-server's ratio to the heartbeat (10×), the campaigns theirs to the
// election (a fortieth to a fifth of the shortest: 25-200 ms).
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

// lookupRaftNode is nats-server's (*Server).lookupRaftNode: the Raft node
// of a group on this server, nil when there is none. No exported way gives
// a group's node; the name fails the link when nats-server no longer has
// it, and TestPeerLossElectsAtOnce when it no longer does this.
//
//go:linkname lookupRaftNode github.com/nats-io/nats-server/v2/server.(*Server).lookupRaftNode
func lookupRaftNode(s *server.Server, group string) server.RaftNode

// peerWatchEvery is how often CampaignOnPeerLoss looks at the routes.
const peerWatchEvery = 50 * time.Millisecond

// CampaignOnPeerLoss watches the routes of ns, a node of a cluster, until
// ctx ends. When the last route to a peer closes (its process died: its
// kernel closed its sockets at once, as after a kill -9 or a crash), one
// follower of each Raft group that peer led stands now (after
// MinCampaign-MaxCampaign), not after its election timeout: new leaders in
// a few hundred milliseconds instead of 1-2 s. A peer cut off or powered
// off closes nothing: its groups elect on their timeout as before. A route
// closed while its peer lives costs that peer's groups a leader change.
func CampaignOnPeerLoss(ctx context.Context, ns *server.Server, log zerolog.Logger) {
	t := time.NewTicker(peerWatchEvery)
	defer t.Stop()
	seen := routedPeers(ns)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := routedPeers(ns)
		for peer := range seen {
			if !now[peer] {
				groups := campaignFor(ns, peer, now)
				log.Info().Str("peer", peer).Strs("groups", groups).Msg("NATS node's routes all closed: the groups it led elect now")
			}
		}
		seen = now
	}
}

// routedPeers are the names of the peers ns has a route to.
func routedPeers(ns *server.Server) map[string]bool {
	rz, err := ns.Routez(&server.RoutezOptions{})
	if err != nil || rz == nil {
		return nil
	}
	peers := make(map[string]bool, len(rz.Routes))
	for _, r := range rz.Routes {
		peers[r.RemoteName] = true
	}
	return peers
}

// campaignFor asks the Raft groups on ns led by the peer named peer to
// elect now where this node should stand (standsFor), and returns them.
func campaignFor(ns *server.Server, peer string, routed map[string]bool) []string {
	az, err := ns.Accountz(&server.AccountzOptions{})
	if err != nil {
		return nil
	}
	var asked []string
	for _, acc := range az.Accounts {
		st := ns.Raftz(&server.RaftzOptions{AccountFilter: acc})
		if st == nil {
			continue
		}
		for group, g := range (*st)[acc] {
			p, ok := g.Peers[g.Leader]
			if g.Leader == "" || g.Leader == g.ID || !ok || p.Name != peer || !standsFor(g, routed) {
				continue
			}
			if n := lookupRaftNode(ns, group); n != nil && n.Campaign() == nil {
				asked = append(asked, group)
			}
		}
	}
	return asked
}

// standsFor says whether this node should stand at once in g, whose leader
// is lost: it reaches a quorum of g's members (a node cut off from all
// would only raise the term and unseat the leader when it is back), and it
// has the lowest id of those it reaches (two standing together split the
// vote and both wait their election timeout).
func standsFor(g server.RaftzGroup, routed map[string]bool) bool {
	reached := 1
	for id, p := range g.Peers {
		if id == g.Leader || !routed[p.Name] {
			continue
		}
		if id < g.ID {
			return false
		}
		reached++
	}
	return reached >= g.QuorumNeeded
}
