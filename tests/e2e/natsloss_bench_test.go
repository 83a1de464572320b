//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/skeinhq/skein/bus"
)

// BenchmarkNATSNodeLoss times what a user waits for when a NATS node of a
// three-node `skein nats` cluster goes: from the moment the node leading
// the commands stream is killed (kill -9) or stopped (SIGTERM: it hands its
// leaderships over first) to the next command done, CLI invocation to the
// agent's answer. Each round restarts the node and waits for it to be
// current. Reported: the median and the longest of the rounds; the same
// kill -9 on nodes with nats-server's own Raft timings is the baseline.
//
//	go test -tags e2e -run '^$' -bench BenchmarkNATSNodeLoss -benchtime 20x ./tests/e2e/
func BenchmarkNATSNodeLoss(b *testing.B) {
	for _, v := range []struct {
		name  string
		args  []string
		modes []syscall.Signal
	}{
		{"skein", nil, []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM}},
		{"nats-server", []string{"--raft", "nats-server"}, []syscall.Signal{syscall.SIGKILL}},
	} {
		c := newNATSCluster(b, v.args...)
		c.agents(b, "c1")
		c.must(b, "launch", "skein-busybox", "nl1", "-s", "c1")
		for _, sig := range v.modes {
			name := map[syscall.Signal]string{syscall.SIGKILL: "kill9", syscall.SIGTERM: "sigterm"}[sig]
			b.Run(v.name+"/"+name, func(b *testing.B) { nodeLoss(b, c, name, sig) })
		}
		_, _ = c.skein("delete", "nl1")
		c.close()
	}
}

var nodeLossRound int

// nodeLoss is b.N rounds of losing the commands stream's leader's node by
// sig, each timed to the next command done.
func nodeLoss(b *testing.B, c *natsCluster, mode string, sig syscall.Signal) {
	conn := c.admin(b)
	// leaderOf is the node leading what an INFO request on subject tells of.
	leaderOf := func(subject string) string {
		m, err := conn.NC.Request(subject, nil, 500*time.Millisecond)
		if err != nil {
			return ""
		}
		var info struct {
			Cluster struct {
				Leader string `json:"leader"`
			} `json:"cluster"`
		}
		if json.Unmarshal(m.Data, &info) != nil {
			return ""
		}
		return info.Cluster.Leader
	}
	groups := []string{
		"$JS.API.STREAM.INFO." + bus.StreamCommands,
		"$JS.API.CONSUMER.INFO." + bus.StreamCommands + "." + bus.AgentConsumerName("c1"),
		"$JS.API.STREAM.INFO." + bus.StreamResults,
	}
	leader := func() int {
		var n int
		eventually(b, 30*time.Second, func() bool {
			_, err := fmt.Sscanf(leaderOf(groups[0]), "n%d", &n)
			return err == nil && n >= 1 && n <= 3
		}, "the commands stream has no leader")
		return n - 1
	}
	// elected follows, from start until stop, when each group led by the
	// lost node has a leader elsewhere: what the figures are made of.
	elected := func(lost string, start time.Time, stop <-chan struct{}) <-chan string {
		out := make(chan string, 1)
		go func() {
			took := make([]time.Duration, len(groups))
			for {
				left := 0
				for i, g := range groups {
					if took[i] == 0 {
						if l := leaderOf(g); l != "" && l != lost {
							took[i] = time.Since(start)
						} else {
							left++
						}
					}
				}
				select {
				case <-stop:
					out <- fmt.Sprintf("new leaders of commands, c1's consumer, results after %v", took)
					return
				case <-time.After(20 * time.Millisecond):
				}
				if left == 0 {
					<-stop
					out <- fmt.Sprintf("new leaders of commands, c1's consumer, results after %v", took)
					return
				}
			}
		}()
		return out
	}
	var took []time.Duration
	for range b.N {
		n := leader()
		nodeLossRound++
		start := time.Now()
		_ = c.nodes[n].cmd.Process.Signal(sig)
		stop := make(chan struct{})
		told := elected(fmt.Sprintf("n%d", n+1), start, stop)
		out, err := c.skein("addservice", "nl1", fmt.Sprintf("svc%d", nodeLossRound), "80", "--id", fmt.Sprintf("nl-%d-%d", nodeLossRound, time.Now().UnixNano()), "--timeout", "60s")
		took = append(took, time.Since(start))
		close(stop)
		// On stderr: a benchmark's log keeps its first lines only.
		fmt.Fprintf(os.Stderr, "%s of n%d: command done after %v; %s\n", mode, n+1, took[len(took)-1].Round(time.Millisecond), <-told)
		if err != nil {
			b.Fatalf("the command after node n%d's %s: %v\n%s", n+1, mode, err, out)
		}
		<-c.nodes[n].done
		c.nodes[n].start()
		eventually(b, 60*time.Second, func() bool { return c.healthy(n) }, "node n%d does not catch up after its restart", n+1)
		// Every stream has all three current again before the next loss.
		eventually(b, 60*time.Second, func() bool { return c.healthy(0) && c.healthy(1) && c.healthy(2) }, "the cluster is not current")
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "ms-median")
	b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "ms-max")
	b.ReportMetric(0, "ns/op")
	fmt.Fprintf(os.Stderr, "%s, %d rounds, sorted: %v\n", mode, len(took), took)
}
