//go:build e2e

package machines

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// jobState is a job as `listjobs -o json` shows it.
type jobState struct {
	Name      string `json:"name"`
	Version   int    `json:"version"`
	Count     int    `json:"count"`
	Running   int    `json:"running"`
	Status    string `json:"status"`
	Instances []struct {
		Name    string `json:"name"`
		Server  string `json:"server"`
		Status  string `json:"status"`
		Version int    `json:"version"`
		Health  string `json:"health"`
	} `json:"instances"`
}

// jobNow is job as listjobs shows it now.
func jobNow(t *testing.T, job string) jobState {
	t.Helper()
	var views []jobState
	if err := json.Unmarshal([]byte(mustSkein(t, "listjobs", "-o", "json")), &views); err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		if v.Name == job {
			return v
		}
	}
	return jobState{}
}

// backends counts the backends of load balancer lb.
func backends(t *testing.T, lb string) int {
	t.Helper()
	var views []struct {
		Name     string `json:"name"`
		Backends []struct {
			Name string `json:"name"`
		} `json:"backends"`
	}
	_ = json.Unmarshal([]byte(mustSkein(t, "listlbs", "-o", "json")), &views)
	for _, v := range views {
		if v.Name == lb {
			return len(v.Backends)
		}
	}
	return -1
}

// running counts a job's running instances on each machine, at version
// (any version when 0).
func running(j jobState, version int) map[string]int {
	out := map[string]int{}
	for _, in := range j.Instances {
		if in.Status == "Running" && (version == 0 || in.Version == version) {
			out[in.Server]++
		}
	}
	return out
}

// A job spread over m1-m3, two instances a machine behind haproxy on m1,
// rolled to a new version while the host asks the load balancer every 20 ms:
// no request fails, and every instance ends at the new version, two a machine.
func TestRollingUpgradeAcrossMachines(t *testing.T) {
	mustSkein(t, "addlb", "haproxy", "m1", "-n", "rollb")
	t.Cleanup(func() { _, _ = skein("dellb", "rollb") })
	mustSkein(t, "pub", "m1:rollb", "80", "--host-port", "18094")
	// Six at most two a machine: no machine has room for a new instance
	// beside its old ones, so each step retires an old one first.
	mustSkein(t, "addjob", "skein-busybox", "6", "-r", "2", "--name", "roll", "--service", "rollweb", "--port", "80", "--lb", "rollb", "--timeout", "180s")
	t.Cleanup(func() { _, _ = skein("deljob", "roll", "--timeout", "90s") })
	eventually(t, 60*time.Second, func() bool { return fmt.Sprint(running(jobNow(t, "roll"), 1)) == "map[m1:2 m2:2 m3:2]" },
		"the job is not two a machine: %+v", func() any { return jobNow(t, "roll") }())
	eventually(t, 60*time.Second, func() bool { return backends(t, "rollb") == 6 }, "the load balancer does not have the 6 instances: %d", backends(t, "rollb"))
	const url = "http://10.77.200.11:18094/"
	// Bounded: 20 ms apart, 15,000 requests (5 min) at the most.
	l := startLoad(url, 20*time.Millisecond, 15000)
	eventually(t, 30*time.Second, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.ok >= 10 }, "the load balancer does not answer")

	start := time.Now()
	out, err := skein("upgradejob", "roll", "-i", "2", "--deadline", "60", "--wait", "4m")
	took := time.Since(start)
	// A tail after the last step: the old instances are out of rotation.
	l.mu.Lock()
	from := l.ok + len(l.failures)
	l.mu.Unlock()
	eventually(t, 30*time.Second, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.ok+len(l.failures) >= from+100 }, "the load stopped")
	ok, failed := l.end()
	t.Logf("upgradejob roll (6 instances, -r 2, -i 2) across m1-m3: %s; %d requests every 20 ms, %d failed; answered by %v",
		took.Round(100*time.Millisecond), ok+failed, failed, l.answers)
	if err != nil {
		t.Fatalf("upgradejob: %v\n%s", err, out)
	}
	t.Logf("upgradejob said:\n%s", strings.TrimRight(out, "\n"))
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the rolling upgrade, at %v", failed, ok+failed, l.failures)
	}
	if strings.Count(out, "retired") != 6 || !strings.Contains(out, "done") {
		t.Errorf("upgradejob did not retire the 6 old instances:\n%s", out)
	}
	j := jobNow(t, "roll")
	if j.Version != 2 || j.Running != 6 || len(j.Instances) != 6 {
		t.Errorf("the job after the upgrade: %+v", j)
	}
	for _, in := range j.Instances {
		if in.Version != 2 || in.Health != "passing" {
			t.Errorf("instance %s on %s runs version %d (health %q) after the upgrade", in.Name, in.Server, in.Version, in.Health)
		}
	}
	if got := fmt.Sprint(running(j, 2)); got != "map[m1:2 m2:2 m3:2]" {
		t.Errorf("version 2 is not two a machine: %s", got)
	}
	if n := backends(t, "rollb"); n != 6 {
		t.Errorf("the load balancer has %d backends after the upgrade, want 6", n)
	}
}
