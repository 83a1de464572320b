package agent

import (
	"context"
	"testing"
	"time"

	"github.com/skeinhq/skein/internal/container"
)

// The CPU a server's other containers use is averaged over about 15 s from
// Incus's counters: the jobs' instances are left out (they count for what
// they ask), a burst counts little, a container busy for a minute counts
// in full, and a restart (its counter back to zero) is no negative use.
func TestCPUMeterAveragesWhatOtherContainersUse(t *testing.T) {
	const core = uint64(time.Second) // CPU time of one core for a second
	var m cpuMeter
	at := time.Unix(1_000_000, 0)
	db := container.Instance{Name: "db", CPUUsage: 1}
	web := container.Instance{Name: "web-1", Job: "web", CPUUsage: 1}
	beat := func(dbCores, webCores uint64) int64 {
		at = at.Add(2 * time.Second)
		db.CPUUsage += 2 * dbCores * core
		web.CPUUsage += 2 * webCores * core
		return m.sample([]container.Instance{db, web}, at)
	}
	if got := m.sample([]container.Instance{db, web}, at); got != 0 {
		t.Fatalf("the first sample says %d millicores; nothing is known yet", got)
	}
	// The first rate is taken whole (an agent restarted on a busy server
	// says so at once); here db is idle.
	if got := beat(0, 3); got != 0 {
		t.Fatalf("db idle, the job on three cores: %d millicores, want 0", got)
	}
	// A burst of one core for 2 s among idle beats.
	if got := beat(1, 0); got < 100 || got > 150 {
		t.Errorf("a 2 s burst of one core counts %d millicores, want about 125 (1-e^(-2/15) of 1000)", got)
	}
	for range 10 {
		beat(0, 0)
	}
	// db busy on one core for a minute, the job's instance on two.
	var got int64
	for range 30 {
		got = beat(1, 2)
	}
	if got < 980 || got > 1000 {
		t.Errorf("after a minute of db on one core (and a job on two): %d millicores, want about 1000 (the job's left out)", got)
	}
	// db restarts: its counter starts again from zero.
	db.CPUUsage = 0
	at = at.Add(2 * time.Second)
	after := m.sample([]container.Instance{db, web}, at)
	if after < 0 || after > got {
		t.Errorf("after db's restart: %d millicores, want between 0 and %d", after, got)
	}
}

// The heartbeat carries the meter's figure, from the runtime's containers.
func TestHeartbeatTellsTheCPUOtherContainersUse(t *testing.T) {
	ctx := context.Background()
	a := testAgent(&fakePrereqs{})
	rt := a.cfg.Runtime.(*container.Fake)
	for _, s := range []container.CreateSpec{{Name: "web-1", Image: "skein-busybox", Job: "web"}, {Name: "db", Image: "skein-busybox"}} {
		if err := rt.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		rt.AddCPUUsage(s.Name, 1)
	}
	a.heartbeat(ctx)
	rt.AddCPUUsage("web-1", uint64(10*time.Second))
	time.Sleep(10 * time.Millisecond)
	if hb := a.heartbeat(ctx); hb.CPUOther != 0 {
		t.Fatalf("the job's instance alone used CPU, and the beat says others use %d millicores", hb.CPUOther)
	}
	rt.AddCPUUsage("db", uint64(10*time.Millisecond))
	time.Sleep(10 * time.Millisecond)
	if hb := a.heartbeat(ctx); hb.CPUOther <= 0 {
		t.Fatalf("db used CPU, and the beat says others use %d millicores", hb.CPUOther)
	}
}

// An agent that starts on a server already busy says so from its second
// beat, not after a minute of averaging up from zero.
func TestCPUMeterStartsFromTheFirstRate(t *testing.T) {
	var m cpuMeter
	at := time.Unix(1_000_000, 0)
	db := container.Instance{Name: "db", CPUUsage: 1}
	m.sample([]container.Instance{db}, at)
	db.CPUUsage += uint64(2 * time.Second)
	if got := m.sample([]container.Instance{db}, at.Add(2*time.Second)); got != 1000 {
		t.Errorf("db on one core since before the agent: %d millicores at the second beat, want 1000", got)
	}
}
