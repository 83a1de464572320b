//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
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

func jobsNow(t *testing.T) map[string]jobState {
	t.Helper()
	var views []jobState
	if err := json.Unmarshal([]byte(mustSkein(t, "listjobs", "-o", "json")), &views); err != nil {
		t.Fatal(err)
	}
	out := map[string]jobState{}
	for _, v := range views {
		out[v.Name] = v
	}
	return out
}

// perServer counts a job's running instances on each server.
func perServer(j jobState) map[string]int {
	out := map[string]int{}
	for _, in := range j.Instances {
		if in.Status == "Running" {
			out[in.Server]++
		}
	}
	return out
}

// jobContainers are the containers of a job, as the containers' records have them.
func jobContainers(t *testing.T, job string) []events.Container {
	var out []events.Container
	for _, c := range list(t) {
		if c.Job == job {
			out = append(out, c)
		}
	}
	return out
}

// leader is the id of the scheduler that leads.
func leader(t *testing.T) string {
	kv, err := adminJS(t).KeyValue(context.Background(), "skein_leader")
	if err != nil {
		return ""
	}
	e, err := kv.Get(context.Background(), "scheduler.leader")
	if err != nil {
		return ""
	}
	var l events.SchedulerLeader
	_ = json.Unmarshal(e.Value(), &l)
	return l.ID
}

func deljob(t *testing.T, name string) {
	t.Helper()
	mustSkein(t, "deljob", name, "--timeout", "90s")
	if cs := jobContainers(t, name); len(cs) != 0 {
		t.Errorf("deljob %s left %d containers", name, len(cs))
	}
}

// Jobs on the three servers: replicas, groups, binpack and --plan place as
// asked; bad input places nothing; a server lost has its instances placed
// elsewhere and not twice when it returns; the scheduler's leader killed
// during addjob leaves the job with COUNT instances, once.
func TestJobs(t *testing.T) {
	dumpOnFailure(t)
	t.Cleanup(func() {
		for name := range jobsNow(t) {
			_, _, _ = skein("deljob", name, "--timeout", "90s")
		}
	})
	eventually(t, 20*time.Second, func() bool { return leader(t) != "" }, "no scheduler leads")

	t.Run("bad input is refused and nothing is placed", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"addjob", "skein-busybox", "0"}, "bad count"},
			{[]string{"addjob", "skein-busybox", "7", "-r", "2", "--name", "bad"}, "only 6 of 7 instances fit"},
			{[]string{"addjob", "skein-busybox", "5000", "--name", "bad"}, "of 5000 instances fit"},
			{[]string{"addjob", "no-such-image", "2", "--name", "bad"}, `image "no-such-image" is on none of the servers`},
			{[]string{"addjob", "skein-busybox", "2", "-n", "nosuchnet", "--name", "bad"}, "no server has network nosuchnet"},
			{[]string{"addjob", "skein-busybox", "2", "-s", "random"}, "spread or binpack"},
			{[]string{"addjob", "skein-busybox", "3", "-g", "g", "-r", "2", "--name", "bad"}, "raise -r"},
			{[]string{"addjob", "skein-busybox", "2", "--service", "web"}, "go together"},
		} {
			_, stderr, err := skein(tc.args...)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("skein %q: %v %q does not say %q", tc.args, err, strings.TrimSpace(stderr), tc.want)
			}
		}
		if js := jobsNow(t); len(js) != 0 {
			t.Errorf("refused jobs left %v", js)
		}
		if cs := jobContainers(t, "bad"); len(cs) != 0 {
			t.Errorf("refused jobs placed %d containers", len(cs))
		}
	})

	t.Run("--plan prints the placement and changes nothing", func(t *testing.T) {
		out := mustSkein(t, "addjob", "skein-busybox", "6", "-r", "2", "--name", "web", "--plan")
		if !strings.Contains(out, "placement: s1 2, s2 2, s3 2") || !strings.Contains(out, "nothing was placed") {
			t.Errorf("--plan said %q", out)
		}
		// Over 3 s (a leader would have placed by then), nothing appears.
		for i := 0; i < 10; i++ {
			if js := jobsNow(t); len(js) != 0 || len(jobContainers(t, "web")) != 0 {
				t.Fatalf("--plan changed something: %v", js)
			}
			time.Sleep(300 * time.Millisecond)
		}
	})

	t.Run("addjob 6 -r 2 puts two on each server; scalejob to 3 and 5, not 7", func(t *testing.T) {
		start := time.Now()
		out := mustSkein(t, "addjob", "skein-busybox", "6", "-r", "2", "--name", "web", "--timeout", "120s")
		t.Logf("addjob 6 -r 2: all running %s after the CLI started", time.Since(start).Round(100*time.Millisecond))
		if !strings.Contains(out, "6 of 6 running") {
			t.Errorf("addjob said %q", out)
		}
		j := jobsNow(t)["web"]
		if got := perServer(j); got["s1"] != 2 || got["s2"] != 2 || got["s3"] != 2 || j.Status != "running" || j.Version != 1 {
			t.Errorf("web: %+v per server %v", j, got)
		}
		// The same addjob again changes nothing.
		if out := mustSkein(t, "addjob", "skein-busybox", "6", "-r", "2", "--name", "web"); !strings.Contains(out, "nothing to do") {
			t.Errorf("the same addjob again said %q", out)
		}
		if out, _, err := skein("addjob", "skein-busybox", "4", "--name", "web"); err == nil {
			t.Errorf("a different job under the same name was taken: %s", out)
		}
		if n := len(jobContainers(t, "web")); n != 6 {
			t.Errorf("web has %d containers", n)
		}
		// scalejob: down to 3 and up to 5 as asked, beyond -r 2 on every server refused.
		if out := mustSkein(t, "scalejob", "web", "3", "--timeout", "90s"); !strings.Contains(out, "3 of 3 running") {
			t.Errorf("scalejob web 3 said %q", out)
		}
		// CI at bec1a71 read 4 containers here once, then 3 in listjobs a
		// moment later (all three excess instances' deletions were done
		// before scalejob returned): a record seen again for a moment, cause
		// open (issue 24's note). Read until 3 for up to 10 s, and say so.
		var n int
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if n = len(jobContainers(t, "web")); n == 3 || time.Now().After(deadline) {
				break
			}
			t.Logf("after scalejob web 3 returned: %d containers of web listed; reading again", n)
		}
		if n != 3 || jobsNow(t)["web"].Count != 3 {
			t.Errorf("after scalejob web 3: %d containers, %+v", n, jobsNow(t)["web"])
		}
		if out := mustSkein(t, "scalejob", "web", "5", "--timeout", "90s"); !strings.Contains(out, "5 of 5 running") {
			t.Errorf("scalejob web 5 said %q", out)
		}
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"scalejob", "web", "7"}, "lower the count, raise -r"},
			{[]string{"scalejob", "web", "0"}, "from 1 to 10000"},
			{[]string{"scalejob", "nosuchjob", "2"}, "no job named nosuchjob"},
		} {
			if _, stderr, err := skein(tc.args...); err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("skein %q: %v %q does not say %q", tc.args, err, strings.TrimSpace(stderr), tc.want)
			}
		}
		if got := perServer(jobsNow(t)["web"]); len(jobContainers(t, "web")) != 5 || got["s1"] > 2 || got["s2"] > 2 || got["s3"] > 2 {
			t.Errorf("after a refused scalejob web 7: %d containers, %v per server", len(jobContainers(t, "web")), got)
		}
		deljob(t, "web")
	})

	t.Run("-g keeps a group on one server; -n keeps to one network", func(t *testing.T) {
		mustSkein(t, "addjob", "skein-busybox", "3", "--name", "shop-api", "-g", "shop", "--timeout", "120s")
		mustSkein(t, "addjob", "skein-busybox", "2", "--name", "shop-db", "-g", "shop", "--timeout", "120s")
		js := jobsNow(t)
		api, db := perServer(js["shop-api"]), perServer(js["shop-db"])
		if len(api) != 1 || len(db) != 1 {
			t.Fatalf("the group is spread: api %v, db %v", api, db)
		}
		for s := range api {
			if db[s] != 2 || api[s] != 3 {
				t.Errorf("api %v and db %v are not on one server", api, db)
			}
		}
		mustSkein(t, "addjob", "skein-busybox", "2", "--name", "net2", "-n", "skeinbr2", "--timeout", "120s")
		if got := perServer(jobsNow(t)["net2"]); got["s2"] != 2 {
			t.Errorf("-n skeinbr2: %v", got)
		}
		deljob(t, "shop-api")
		deljob(t, "shop-db")
		deljob(t, "net2")
	})

	t.Run("-s binpack fills one server before the next", func(t *testing.T) {
		var hbs []struct {
			Name         string `json:"name"`
			MemTotal     int64  `json:"mem_total"`
			MemAvailable int64  `json:"mem_available"`
			MemJobs      int64  `json:"mem_jobs"`
		}
		if err := json.Unmarshal([]byte(mustSkein(t, "servers", "-o", "json")), &hbs); err != nil || len(hbs) == 0 {
			t.Fatal(err)
		}
		// Each instance asks for 40% of what the jobs may have of a server's
		// memory (what the rest uses counts too): two fit on one server.
		free := hbs[0].MemAvailable + hbs[0].MemJobs
		ask := fmt.Sprintf("%dM", free*4/10>>20)
		out := mustSkein(t, "addjob", "skein-busybox", "4", "--name", "bp", "-s", "binpack", "--mem", ask, "--timeout", "120s")
		got := perServer(jobsNow(t)["bp"])
		counts := []int{}
		for _, n := range got {
			counts = append(counts, n)
		}
		sort.Ints(counts)
		if fmt.Sprint(counts) != "[2 2]" {
			t.Errorf("binpack of 4 (two fit a server): %v\n%s", got, out)
		}
		// The servers running them say what the jobs' instances use (Incus's
		// figures): the scheduler counts the rest of the memory in use apart.
		eventually(t, 15*time.Second, func() bool {
			if err := json.Unmarshal([]byte(mustSkein(t, "servers", "-o", "json")), &hbs); err != nil {
				return false
			}
			for _, hb := range hbs {
				if got[hb.Name] > 0 && hb.MemJobs <= 0 {
					return false
				}
			}
			return true
		}, "a server running bp's instances says its jobs use no memory: %+v", hbs)
		// spread, for contrast, would use all three servers.
		plan := mustSkein(t, "addjob", "skein-busybox", "4", "--name", "sp", "--mem", "64M", "--plan")
		if !strings.Contains(plan, "s1 ") || !strings.Contains(plan, "s2 ") || !strings.Contains(plan, "s3 ") {
			t.Errorf("spread plan of 4: %s", plan)
		}
		deljob(t, "bp")
	})

	t.Run("a container busy on s3's CPU keeps instances that need that CPU off s3", func(t *testing.T) {
		type beat struct {
			Name     string `json:"name"`
			CPUs     int64  `json:"cpus"`
			CPUOther int64  `json:"cpu_other"`
		}
		beats := func() map[string]beat {
			var hbs []beat
			if err := json.Unmarshal([]byte(mustSkein(t, "servers", "-o", "json")), &hbs); err != nil {
				t.Fatal(err)
			}
			out := map[string]beat{}
			for _, hb := range hbs {
				out[hb.Name] = hb
			}
			return out
		}
		mustSkein(t, "launch", "skein-busybox", "cpuhog", "-s", "s3")
		t.Cleanup(func() { _, _, _ = skein("delete", "cpuhog") })
		// One core busy for at most 90 s: it stops by itself, or with the
		// container at the subtest's end.
		if out, err := incusCmd("exec", "cpuhog", "--project", "skein-s3", "--", "sh", "-c", "setsid timeout 90 sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &"); err != nil {
			t.Fatalf("starting the busy loop: %v %s", err, out)
		}
		var hbs map[string]beat
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
			if hbs = beats(); hbs["s3"].CPUOther >= 600 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("s3's heartbeat does not count the busy container's CPU after 60 s: %+v", hbs)
			}
		}
		// An ask that fits what s1 and s2 have left, not what s3 has.
		s3Room := hbs["s3"].CPUs*1000 - hbs["s3"].CPUOther
		ask := min(hbs["s1"].CPUs*1000-hbs["s1"].CPUOther, hbs["s2"].CPUs*1000-hbs["s2"].CPUOther) - 100
		if ask <= s3Room+200 {
			t.Fatalf("s1 and s2 are as busy as s3 (%+v): no ask tells them apart", hbs)
		}
		// One on each server (-r 1): three do not fit, two do, on s1 and s2.
		out, stderr, err := skein("addjob", "skein-busybox", "3", "--name", "cpuask", "--cpu", fmt.Sprint(ask), "-r", "1", "--plan")
		if err == nil || !strings.Contains(stderr, "only 2 of 3 instances fit") || !strings.Contains(stderr, "CPU") {
			t.Errorf("three instances asking %d millicores each, one a server, s3 with %d left: %v %s%s", ask, s3Room, err, out, stderr)
		}
		plan := mustSkein(t, "addjob", "skein-busybox", "2", "--name", "cpuask", "--cpu", fmt.Sprint(ask), "-r", "1", "--plan")
		if strings.Contains(plan, "s3 ") || !strings.Contains(plan, "s1 ") || !strings.Contains(plan, "s2 ") {
			t.Errorf("two instances asking %d millicores each, s3 with %d left: %s", ask, s3Room, plan)
		}
		t.Logf("s3's other containers use %d millicores; %d asked, %d left on s3: %s", hbs["s3"].CPUOther, ask, s3Room, strings.TrimSpace(stderr))
	})

	t.Run("upgradejob -i 2 of 6 at most 2 per server behind a load balancer with 4 keep-alive clients: 0 failed requests; a broken image reverts", func(t *testing.T) {
		// A second alias of the app image stands for a new version of the app.
		fp, err := incusCmd("image", "list", "skein-busybox", "--format", "csv", "-c", "F")
		fp = strings.TrimSpace(fp)
		if err != nil || fp == "" {
			t.Fatalf("the app image's fingerprint: %v %q", err, fp)
		}
		_, _ = incusCmd("image", "alias", "delete", "skein-busybox-v2")
		if out, err := incusCmd("image", "alias", "create", "skein-busybox-v2", fp); err != nil {
			t.Fatalf("alias: %v %s", err, out)
		}
		t.Cleanup(func() { _, _ = incusCmd("image", "alias", "delete", "skein-busybox-v2") })
		cleanup(t, "jlb")
		mustSkein(t, "addlb", "haproxy", "s1", "-n", "jlb")
		t.Cleanup(func() { _, _, _ = skein("dellb", "jlb") })
		mustSkein(t, "pub", "s1:jlb", "80", "--host-port", "18090")
		const url = "http://127.0.0.1:18090/"
		if out, _, err := skein("addjob", "skein-busybox", "4", "--name", "up", "--lb", "nolb", "--service", "upweb", "--port", "80"); err == nil {
			t.Errorf("--lb of a load balancer that is not there was taken: %s", out)
		}
		// Six at most two per server: no server has room for a new instance
		// beside the old ones, so each step retires an old one first.
		mustSkein(t, "addjob", "skein-busybox", "6", "-r", "2", "--name", "up", "--service", "upweb", "--port", "80", "--lb", "jlb", "--timeout", "120s")
		backends := func() int {
			var views []struct {
				Name     string `json:"name"`
				Backends []struct {
					Name string `json:"name"`
				} `json:"backends"`
			}
			_ = json.Unmarshal([]byte(mustSkein(t, "listlbs", "-o", "json")), &views)
			for _, v := range views {
				if v.Name == "jlb" {
					return len(v.Backends)
				}
			}
			return -1
		}
		eventually(t, 30*time.Second, func() bool { return backends() == 6 }, "the load balancer does not have the 6 instances: %d", backends())
		eventually(t, 10*time.Second, func() bool { _, err := httpGet("127.0.0.1:18090"); return err == nil }, "the load balancer does not answer")
		if j := jobsNow(t)["up"]; j.Version != 1 {
			t.Fatalf("up before: %+v", j)
		}

		var out string
		start := time.Now()
		res := loadDuring(t, url, 4, 2000, 4*time.Minute, func() {
			out = mustSkein(t, "upgradejob", "up", "-i", "2", "--image", "skein-busybox-v2", "--deadline", "30", "--wait", "3m")
		})
		t.Logf("upgradejob -i 2 of 6 instances (-r 2): %s; %d requests, %d failed (%v)", time.Since(start).Round(100*time.Millisecond), res.total, res.failed, res.firstErr)
		if res.failed != 0 {
			t.Errorf("%d of %d requests failed during the upgrade: %v", res.failed, res.total, res.firstErr)
		}
		if strings.Count(out, "retired") != 6 || strings.Count(out, "healthy ") < 6 || !strings.Contains(out, "done") {
			t.Errorf("upgradejob said:\n%s", out)
		}
		j := jobsNow(t)["up"]
		if j.Version != 2 || j.Running != 6 || len(j.Instances) != 6 {
			t.Errorf("up after: %+v", j)
		}
		if got := perServer(j); got["s1"] != 2 || got["s2"] != 2 || got["s3"] != 2 {
			t.Errorf("-r 2 broken by the upgrade: %v", got)
		}
		for _, in := range j.Instances {
			if in.Version != 2 || in.Health != "passing" {
				t.Errorf("instance %s runs version %d (health %q) after the upgrade", in.Name, in.Version, in.Health)
			}
		}
		if n := backends(); n != 6 {
			t.Errorf("the load balancer has %d backends after the upgrade", n)
		}

		// skein-service serves nothing on port 80: its instances never pass their check.
		res = loadDuring(t, url, 4, 1000, 4*time.Minute, func() {
			var stderr string
			out, stderr, err = skein("upgradejob", "up", "-i", "2", "--image", "skein-service", "--deadline", "15", "--wait", "3m")
			out += stderr
		})
		t.Logf("upgradejob to an image that does not answer: %d requests, %d failed (%v)", res.total, res.failed, res.firstErr)
		if err == nil || !strings.Contains(out, "reverting") || !strings.Contains(out, "reverted") {
			t.Errorf("the broken upgrade: %v\n%s", err, out)
		}
		if res.failed != 0 {
			t.Errorf("%d of %d requests failed during the broken upgrade and its revert: %v", res.failed, res.total, res.firstErr)
		}
		j = jobsNow(t)["up"]
		if j.Version != 2 || j.Running != 6 || len(j.Instances) != 6 {
			t.Errorf("up after the revert: %+v", j)
		}
		for _, in := range j.Instances {
			if in.Version != 2 {
				t.Errorf("instance %s runs version %d after the revert", in.Name, in.Version)
			}
		}
		if n := backends(); n != 6 {
			t.Errorf("the load balancer has %d backends after the revert", n)
		}
		deljob(t, "up")
	})

	t.Run("a server killed and left down: its instances are placed elsewhere within 30 s, and not twice when it returns", func(t *testing.T) {
		mustSkein(t, "addjob", "skein-busybox", "6", "--name", "ha", "--timeout", "120s")
		if got := perServer(jobsNow(t)["ha"]); got["s3"] != 2 {
			t.Fatalf("ha before: %v", got)
		}
		agents["s3"].kill9()
		killed := time.Now()
		restarted := false
		defer func() {
			if !restarted {
				agents["s3"] = startAgent("s3")
			}
		}()
		eventually(t, 45*time.Second, func() bool {
			got := perServer(jobsNow(t)["ha"])
			return got["s1"]+got["s2"] == 6
		}, "the instances of s3 are not placed elsewhere: %v", perServer(jobsNow(t)["ha"]))
		took := time.Since(killed)
		t.Logf("kill -9 of s3's agent -> 6 instances running on s1 and s2 after %s", took.Round(100*time.Millisecond))
		if took > 30*time.Second {
			t.Errorf("replacing took %s: more than 30 s", took)
		}
		agents["s3"] = startAgent("s3")
		restarted = true
		eventually(t, 60*time.Second, func() bool {
			j := jobsNow(t)["ha"]
			return len(j.Instances) == 6 && j.Running == 6 && len(jobContainers(t, "ha")) == 6
		}, "ha does not settle at 6 after s3 returns: %+v", jobsNow(t)["ha"])
		// And stays there.
		for i := 0; i < 6; i++ {
			time.Sleep(500 * time.Millisecond)
			if n := len(jobContainers(t, "ha")); n != 6 {
				t.Fatalf("ha has %d instances after s3 returned", n)
			}
		}
		if out := mustSkein(t, "events", "--type", "job.placed"); !strings.Contains(out, `"replaced"`) {
			t.Errorf("no job.placed event with cause replaced:\n%s", tail(out, 1500))
		}
		if out := mustSkein(t, "events", "--type", "job.removed"); !strings.Contains(out, `"excess"`) {
			t.Errorf("no job.removed event with cause excess:\n%s", tail(out, 1500))
		}
		deljob(t, "ha")
	})

	t.Run("the scheduler's leader killed during addjob: COUNT instances, once", func(t *testing.T) {
		first := leader(t)
		if schedulers[first] == nil {
			t.Fatalf("the leader is %q, not one of the test's schedulers", first)
		}
		mustSkein(t, "addjob", "skein-busybox", "6", "--name", "lead", "--detach")
		schedulers[first].kill9()
		defer func() {
			schedulers[first] = startProc(first, "scheduler", "--nats", natsURL, "--creds", schedulerCreds, "--id", first, "--log-level", "debug")
		}()
		eventually(t, 20*time.Second, func() bool { l := leader(t); return l != "" && l != first }, "no other scheduler took the lead from %s", first)
		t.Logf("the lead went from %s to %s", first, leader(t))
		eventually(t, 90*time.Second, func() bool {
			j := jobsNow(t)["lead"]
			return j.Running == 6 && len(jobContainers(t, "lead")) == 6
		}, "lead does not reach 6 running: %+v", jobsNow(t)["lead"])
		for i := 0; i < 6; i++ {
			time.Sleep(500 * time.Millisecond)
			if n := len(jobContainers(t, "lead")); n != 6 {
				t.Fatalf("lead has %d instances", n)
			}
		}
		names := []string{}
		for _, c := range jobContainers(t, "lead") {
			names = append(names, c.Name)
		}
		sort.Strings(names)
		if strings.Join(names, ",") != "lead-1,lead-2,lead-3,lead-4,lead-5,lead-6" {
			t.Errorf("instances %v, want lead-1..lead-6", names)
		}
		deljob(t, "lead")
	})

	t.Run("two upgradejobs of one job at once: one rolls, the other is refused; the leader killed mid-rollout: the next finishes it, each instance once", func(t *testing.T) {
		mustSkein(t, "addjob", "skein-busybox", "4", "--name", "ru", "--timeout", "120s")
		eventually(t, 60*time.Second, func() bool { return jobsNow(t)["ru"].Running == 4 }, "ru does not reach 4 running: %+v", jobsNow(t)["ru"])
		type outcome struct {
			out string
			err error
		}
		results := make(chan outcome, 2)
		for range 2 {
			go func() {
				out, stderr, err := skein("upgradejob", "ru", "-i", "3", "--deadline", "60", "--detach")
				results <- outcome{out + stderr, err}
			}()
		}
		var rolled, refused int
		for range 2 {
			r := <-results
			switch {
			case r.err == nil:
				rolled++
			case strings.Contains(r.out, "is being upgraded") || strings.Contains(r.out, "changed meanwhile"):
				refused++
			default:
				t.Errorf("an upgradejob failed otherwise: %v\n%s", r.err, r.out)
			}
		}
		if rolled != 1 || refused != 1 {
			t.Errorf("two upgradejobs at once: %d rolled, %d refused; want 1 and 1", rolled, refused)
		}
		if j := jobsNow(t)["ru"]; j.Version != 2 || j.Status != "upgrading" {
			t.Fatalf("after two upgradejobs at once ru is at version %d, %q; want 2, upgrading", j.Version, j.Status)
		}
		first := leader(t)
		if schedulers[first] == nil {
			t.Fatalf("the leader is %q, not one of the test's schedulers", first)
		}
		schedulers[first].kill9()
		defer func() {
			schedulers[first] = startProc(first, "scheduler", "--nats", natsURL, "--creds", schedulerCreds, "--id", first, "--log-level", "debug")
		}()
		eventually(t, 20*time.Second, func() bool { l := leader(t); return l != "" && l != first }, "no other scheduler took the lead from %s", first)
		t.Logf("the lead went from %s to %s during the rollout", first, leader(t))
		eventually(t, 150*time.Second, func() bool {
			j := jobsNow(t)["ru"]
			if j.Status != "running" || j.Running != 4 || len(j.Instances) != 4 {
				return false
			}
			for _, in := range j.Instances {
				if in.Version != 2 {
					return false
				}
			}
			return true
		}, "the rollout is not finished by the new leader: %+v", lazyJob(func() jobState { return jobsNow(t)["ru"] }))
		for range 6 {
			time.Sleep(500 * time.Millisecond)
			if n := len(jobContainers(t, "ru")); n != 4 {
				t.Fatalf("ru has %d instances after the rollout", n)
			}
		}
		deljob(t, "ru")
	})

	t.Run("the leader paused past its lease and resumed: two schedulers believe they lead, no instance runs twice", func(t *testing.T) {
		first := leader(t)
		if schedulers[first] == nil {
			t.Fatalf("the leader is %q, not one of the test's schedulers", first)
		}
		mustSkein(t, "addjob", "skein-busybox", "6", "--name", "pz", "--detach")
		_ = schedulers[first].cmd.Process.Signal(syscall.SIGSTOP)
		resumed := false
		defer func() {
			if !resumed {
				_ = schedulers[first].cmd.Process.Signal(syscall.SIGCONT)
			}
		}()
		eventually(t, 30*time.Second, func() bool { l := leader(t); return l != "" && l != first }, "no other scheduler took the lead from the paused %s", first)
		eventually(t, 90*time.Second, func() bool { return jobsNow(t)["pz"].Running == 6 }, "pz does not reach 6 running: %+v", lazyJob(func() jobState { return jobsNow(t)["pz"] }))
		// The paused leader wakes believing it leads, with what it knew then.
		_ = schedulers[first].cmd.Process.Signal(syscall.SIGCONT)
		resumed = true
		for range 20 {
			time.Sleep(500 * time.Millisecond)
			names := map[string]bool{}
			for _, c := range jobContainers(t, "pz") {
				names[c.Name] = true
			}
			if len(names) != 6 {
				t.Fatalf("pz has %d instances after its paused leader resumed: %v", len(names), names)
			}
		}
		deljob(t, "pz")
	})
}

// lazyJob prints a job's state only when a failure message is made.
type lazyJob func() jobState

func (f lazyJob) String() string { return fmt.Sprintf("%+v", f()) }
