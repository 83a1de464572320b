package jobs

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/sched"
)

func TestClusterFromRecords(t *testing.T) {
	now := time.Now()
	hbs := []events.Heartbeat{
		{Name: "s2", Status: "up", Time: now, CPUs: 4, MemTotal: 8 << 30, MemAvailable: 8 << 30, Containers: 10, Network: "br2"},
		{Name: "s1", Status: "up", Time: now, CPUs: 2, MemTotal: 4 << 30, MemAvailable: 4 << 30, Containers: 3, Network: "br1"},
		{Name: "s3", Status: "up", Time: now.Add(-time.Minute), CPUs: 2, MemTotal: 4 << 30},
		{Name: "s4", Status: "up", Time: now, Degraded: []string{"no incus"}},
	}
	other := events.Job{JobAdd: events.JobAdd{Name: "db", CPU: 500, Mem: 1 << 30, Group: "shop"}}
	job := events.Job{JobAdd: events.JobAdd{Name: "web", CPU: 100, Mem: 64 << 20}}
	ctrs := []events.Container{
		{Name: "db-1", Server: "s1", Job: "db"},
		{Name: "db-2", Server: "s1", Job: "db"},
		{Name: "plain", Server: "s2"},
	}
	live := []events.Container{{Name: "web-1", Server: "s2", Job: "web"}}
	got := Cluster(hbs, ctrs, []events.Job{other, job}, job, live, now)
	names := []string{}
	for _, s := range got {
		names = append(names, s.Name)
	}
	if !reflect.DeepEqual(names, []string{"s1", "s2", "s3", "s4"}) {
		t.Fatalf("servers %v", names)
	}
	s1, s2, s3, s4 := got[0], got[1], got[2], got[3]
	if s1.CPU != 2000 || s1.Mem != 4<<30 || s1.UsedCPU != 1000 || s1.UsedMem != 2<<30 || s1.Slots != MaxContainers-3 || !reflect.DeepEqual(s1.Groups, []string{"shop"}) || s1.Instances != 0 {
		t.Errorf("s1 = %+v", s1)
	}
	if s2.Instances != 1 || s2.UsedCPU != 100 || s2.UsedMem != 64<<20 || s2.Down != "" {
		t.Errorf("s2 = %+v", s2)
	}
	if s3.Down != "down" || s4.Down == "" {
		t.Errorf("s3 %q, s4 %q: want both set aside", s3.Down, s4.Down)
	}
	job.Network = "br2"
	got = Cluster(hbs, ctrs, nil, job, nil, now)
	if got[0].Down == "" || got[1].Down != "" {
		t.Errorf("-n br2: s1 %q, s2 %q", got[0].Down, got[1].Down)
	}
}

// TestClusterCountsMemoryOthersUse (issue 24: the scheduler's capacity
// counts everything running on a server, not only its jobs): a server of
// 8 GiB with 2 GiB available, 1 GiB of it used by the jobs' instances,
// has 5 GiB taken by the rest (a database launched by hand, the host):
// a job asking 3.5 GiB goes to the server with room, and on it alone
// none fits.
func TestClusterCountsMemoryOthersUse(t *testing.T) {
	now := time.Now()
	hbs := []events.Heartbeat{
		{Name: "busy", Status: "up", Time: now, CPUs: 4, MemTotal: 8 << 30, MemAvailable: 2 << 30, MemJobs: 1 << 30},
		{Name: "idle", Status: "up", Time: now, CPUs: 4, MemTotal: 8 << 30, MemAvailable: 7 << 30},
	}
	job := events.Job{JobAdd: events.JobAdd{Name: "big", Mem: 7 << 29, Count: 2}}
	got := Cluster(hbs, nil, []events.Job{job}, job, nil, now)
	if got[0].UsedMem != 5<<30 || got[1].UsedMem != 1<<30 {
		t.Fatalf("memory in use beyond the jobs': busy %d, idle %d; want 5 GiB and 1 GiB", got[0].UsedMem>>20, got[1].UsedMem>>20)
	}
	plan, err := sched.Place(got, Spec(job, 2))
	if err != nil {
		t.Fatal(err)
	}
	if plan.Place["busy"] != 0 || plan.Place["idle"] != 2 {
		t.Fatalf("plan %v: the busy server took instances into memory in use", plan.Place)
	}
	if _, err := sched.Place(got[:1], Spec(job, 1)); err == nil || !strings.Contains(err.Error(), "not enough memory") {
		t.Fatalf("on the busy server alone: %v", err)
	}
}

func TestInstanceNames(t *testing.T) {
	taken := []events.Container{{Name: "web-1"}, {Name: "web-3"}}
	if got := FreeNames("web", taken, 3); !reflect.DeepEqual(got, []string{"web-2", "web-4", "web-5"}) {
		t.Errorf("FreeNames = %v", got)
	}
	for name, want := range map[string]int{"web-3": 3, "web-api-1": 0, "web-0": 0, "web-": 0, "other-1": 0, "web-12": 12} {
		if got := Index("web", name); got != want {
			t.Errorf("Index(web, %s) = %d, want %d", name, got, want)
		}
	}
}

// The CPU a server's other containers use (its heartbeat's cpu_other)
// counts as used: an instance asking for more than is left goes elsewhere.
func TestClusterCountsCPUOthersUse(t *testing.T) {
	now := time.Now()
	hbs := []events.Heartbeat{
		{Name: "busy", Status: "up", Time: now, CPUs: 2, MemTotal: 8 << 30, MemAvailable: 7 << 30, CPUOther: 1500},
		{Name: "idle", Status: "up", Time: now, CPUs: 2, MemTotal: 8 << 30, MemAvailable: 7 << 30},
	}
	job := events.Job{JobAdd: events.JobAdd{Name: "cpu", CPU: 1000, Mem: 64 << 20, Count: 2}}
	got := Cluster(hbs, nil, []events.Job{job}, job, nil, now)
	if got[0].UsedCPU != 1500 || got[1].UsedCPU != 0 {
		t.Fatalf("CPU in use: busy %d, idle %d; want 1500 and 0 millicores", got[0].UsedCPU, got[1].UsedCPU)
	}
	plan, err := sched.Place(got, Spec(job, 2))
	if err != nil {
		t.Fatal(err)
	}
	if plan.Place["busy"] != 0 || plan.Place["idle"] != 2 {
		t.Fatalf("plan %v: the busy server took an instance into CPU in use", plan.Place)
	}
	if _, err := sched.Place(got[:1], Spec(job, 1)); err == nil || !strings.Contains(err.Error(), "not enough CPU") {
		t.Fatalf("on the busy server alone: %v", err)
	}
}
