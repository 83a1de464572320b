package bus

import (
	"context"
	"time"
	_ "unsafe" // go:linkname to nats-server's Raft nodes

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

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
// kernel closed its sockets at once, as after a kill -9 or a crash), every
// Raft group that peer led and this node follows is asked to stand now
// (after MinCampaign-MaxCampaign), not after its election timeout: the
// groups a lost node led have new leaders within a few hundred
// milliseconds instead of 1-2 s. A peer that is cut off or powered off
// closes nothing; its groups elect on their timeout as before. A route
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

// campaignFor asks every Raft group on ns whose leader is the peer named
// peer to elect now, where this node is the group's first follower still
// routed (the lowest node id): one follower stands at once, the others vote
// for it. Two standing together split the vote (each votes for itself) and
// both wait their election timeout: BenchmarkNATSNodeLoss found the
// command consumer's group elected 1.2 s after a kill that way. It returns
// the groups asked.
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
			if g.Leader == "" || g.Leader == g.ID || !ok || p.Name != peer || !firstFollower(g, routed) {
				continue
			}
			if n := lookupRaftNode(ns, group); n != nil && n.Campaign() == nil {
				asked = append(asked, group)
			}
		}
	}
	return asked
}

// firstFollower says whether this node has the lowest id of g's members
// other than its leader that it has a route to.
func firstFollower(g server.RaftzGroup, routed map[string]bool) bool {
	for id, p := range g.Peers {
		if id != g.Leader && routed[p.Name] && id < g.ID {
			return false
		}
	}
	return true
}
