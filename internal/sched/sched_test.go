package sched

import (
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

const gib = 1 << 30

func three() []Server {
	return []Server{
		{Name: "s1", CPU: 4000, Mem: 8 * gib, Slots: 100},
		{Name: "s2", CPU: 4000, Mem: 8 * gib, Slots: 100},
		{Name: "s3", CPU: 4000, Mem: 8 * gib, Slots: 100},
	}
}

func mustPlace(t *testing.T, ss []Server, job Job) map[string]int {
	t.Helper()
	p, err := Place(ss, job)
	if err != nil {
		t.Fatal(err)
	}
	return p.Place
}

func TestReplicasSpreadEvenly(t *testing.T) {
	got := mustPlace(t, three(), Job{Name: "web", Count: 6, Replicas: 2, CPU: 100, Mem: 64 << 20})
	if want := map[string]int{"s1": 2, "s2": 2, "s3": 2}; !reflect.DeepEqual(got, want) {
		t.Errorf("6 with -r 2 on 3 servers: %v, want %v", got, want)
	}
}

func TestSpreadPrefersFewestThenLeastUsed(t *testing.T) {
	ss := three()
	ss[0].UsedMem = 6 * gib // s1 busy
	ss[1].Instances = 1     // s2 runs one of the job
	got := mustPlace(t, ss, Job{Name: "web", Count: 2, Mem: 64 << 20})
	if want := map[string]int{"s3": 1, "s1": 1}; !reflect.DeepEqual(got, want) {
		// s3 (no instance, idle) then s1 (no instance, busy) before s2 (one instance)
		t.Errorf("spread: %v, want %v", got, want)
	}
}

func TestBinpackFillsOneServerFirst(t *testing.T) {
	ss := three()
	for i := range ss {
		ss[i].Slots = 3
	}
	p, err := Place(ss, Job{Name: "web", Count: 5, Strategy: Binpack, CPU: 100})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"s1": 3, "s2": 2}; !reflect.DeepEqual(p.Place, want) || !reflect.DeepEqual(p.Order, []string{"s1", "s2"}) {
		t.Errorf("binpack: %v %v, want %v", p.Place, p.Order, want)
	}
	// The most used server that fits goes first.
	ss = three()
	ss[2].UsedCPU = 2000
	if got := mustPlace(t, ss, Job{Name: "web", Count: 2, Strategy: Binpack, CPU: 100}); !reflect.DeepEqual(got, map[string]int{"s3": 2}) {
		t.Errorf("binpack onto the used server: %v", got)
	}
}

func TestGroupsStayOnOneServer(t *testing.T) {
	ss := three()
	ss[0].UsedMem = 4 * gib
	if got := mustPlace(t, ss, Job{Name: "api", Count: 4, Group: "shop"}); len(got) != 1 || got["s2"] != 4 {
		t.Errorf("a new group goes whole to the best server: %v", got)
	}
	ss[2].Groups = []string{"shop"}
	if got := mustPlace(t, ss, Job{Name: "db", Count: 2, Group: "shop"}); !reflect.DeepEqual(got, map[string]int{"s3": 2}) {
		t.Errorf("a group's next job joins it: %v", got)
	}
	ss[2].Slots = 1
	_, err := Place(ss, Job{Name: "db", Count: 2, Group: "shop"})
	var nf *NoFit
	if !errors.As(err, &nf) || nf.Fit != 1 || !strings.Contains(err.Error(), "holds group shop") {
		t.Errorf("a group whose server is full: %v", err)
	}
}

func TestNoFitSaysHowManyFitAndWhy(t *testing.T) {
	ss := three()
	ss[2].Down = "down"
	_, err := Place(ss, Job{Name: "web", Count: 7, Replicas: 2})
	var nf *NoFit
	if !errors.As(err, &nf) || nf.Fit != 4 {
		t.Fatalf("7 with -r 2 on two up servers: %v", err)
	}
	for _, want := range []string{"only 4 of 7 instances fit", "at the job's 2 replicas per server: s1, s2", "down: s3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	ss = three()
	_, err = Place(ss, Job{Name: "big", Count: 7, Mem: 3 * gib})
	if !errors.As(err, &nf) || nf.Fit != 6 || !strings.Contains(err.Error(), "not enough memory") {
		t.Errorf("memory: %v", err)
	}
}

func TestCheckRefusesBadJobs(t *testing.T) {
	for _, c := range []struct {
		job  Job
		want string
	}{
		{Job{Count: 0}, "at least 1"},
		{Job{Count: 1, Replicas: -1}, "replicas"},
		{Job{Count: 1, Strategy: "random"}, "spread or binpack"},
		{Job{Count: 1, CPU: -1}, "negative"},
		{Job{Count: 3, Replicas: 2, Group: "g"}, "raise -r"},
	} {
		if _, err := Place(three(), c.job); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.job, err, c.want)
		}
	}
}

// Whatever the cluster and the job, a plan keeps every limit, places exactly
// Count, leaves its input alone and is the same each time; a refusal is a
// NoFit whose Fit is below Count.
func TestPlanKeepsEveryLimit(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		ss := make([]Server, 1+r.Intn(8))
		for j := range ss {
			ss[j] = Server{Name: fmt.Sprintf("s%d", j), CPU: int64(1000 * (1 + r.Intn(8))), Mem: int64(1+r.Intn(16)) * gib, Slots: r.Intn(20), Instances: r.Intn(3)}
			ss[j].UsedCPU = r.Int63n(ss[j].CPU)
			ss[j].UsedMem = r.Int63n(ss[j].Mem)
			if r.Intn(6) == 0 {
				ss[j].Down = "down"
			}
		}
		job := Job{Name: "j", Count: 1 + r.Intn(30), Replicas: r.Intn(5), CPU: r.Int63n(800), Mem: r.Int63n(gib)}
		if r.Intn(2) == 0 {
			job.Strategy = Binpack
		}
		if r.Intn(5) == 0 {
			job.Group, job.Replicas = "g", 0
		}
		before := append([]Server(nil), ss...)
		p, err := Place(ss, job)
		if !reflect.DeepEqual(before, ss) {
			t.Fatal("Place changed its input")
		}
		if err != nil {
			var nf *NoFit
			if !errors.As(err, &nf) || nf.Fit >= job.Count {
				t.Fatalf("%+v on %+v: %v", job, ss, err)
			}
			continue
		}
		p2, _ := Place(ss, job)
		if !reflect.DeepEqual(p, p2) {
			t.Fatal("two plans of the same input differ")
		}
		total := 0
		for _, s := range ss {
			n := p.Place[s.Name]
			total += n
			if n == 0 {
				continue
			}
			switch {
			case s.Down != "":
				t.Fatalf("placed on a down server")
			case job.Replicas > 0 && s.Instances+n > job.Replicas:
				t.Fatalf("%d+%d over replicas %d", s.Instances, n, job.Replicas)
			case n > s.Slots:
				t.Fatalf("%d over slots %d", n, s.Slots)
			case s.UsedCPU+int64(n)*job.CPU > s.CPU || s.UsedMem+int64(n)*job.Mem > s.Mem:
				t.Fatalf("over capacity")
			}
		}
		if total != job.Count || (job.Group != "" && len(p.Place) != 1) {
			t.Fatalf("placed %d on %d servers for %+v", total, len(p.Place), job)
		}
	}
}

// BenchmarkPlace1M places 1,000,000 instances on 5,000 simulated servers
// (Nomad's C1M scale), one op being the whole plan; go tool task bench:sched.
func BenchmarkPlace1M(b *testing.B) {
	ss := make([]Server, 5000)
	r := rand.New(rand.NewSource(1))
	for i := range ss {
		ss[i] = Server{Name: fmt.Sprintf("s%04d", i), CPU: 64000, Mem: 256 * gib, Slots: 200 + r.Intn(100), UsedMem: r.Int63n(32 * gib)}
	}
	for _, strategy := range []string{Spread, Binpack} {
		b.Run(strategy, func(b *testing.B) {
			job := Job{Name: "c1m", Count: 1_000_000, Strategy: strategy, CPU: 50, Mem: 128 << 20}
			for b.Loop() {
				p, err := Place(ss, job)
				if err != nil || len(p.Place) == 0 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ns/placement")
		})
	}
}
