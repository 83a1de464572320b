package jobs

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/sched"
)

// MaxContainers is how many containers the scheduler puts on one server at most.
const MaxContainers = 500

// downAfter is how old a heartbeat may be before its server counts as down
// (the agents' rule: three missed beats).
const downAfter = 7 * time.Second

// up says whether a heartbeat shows a server that can take instances now.
func up(hb events.Heartbeat, now time.Time) bool {
	return hb.Status == "up" && now.Sub(hb.Time) < downAfter
}

// Cluster is the cluster as the scheduler sees it for one job: every server
// with a heartbeat, what the jobs' instances on it ask for, the memory
// everything else on it uses (otherMem) and the CPU its other containers
// use (Heartbeat.CPUOther), the job's own
// instances and the groups it holds. live are the job's instances that count
// (those of servers lost past the grace period are left out by the caller).
// A pure function of the records.
func Cluster(hbs []events.Heartbeat, ctrs []events.Container, jobs []events.Job, job events.Job, live []events.Container, now time.Time) []sched.Server {
	asks := map[string]events.Job{}
	for _, j := range jobs {
		asks[j.Name] = j
	}
	asks[job.Name] = job
	byServer := map[string]*sched.Server{}
	var out []sched.Server
	for _, hb := range hbs {
		s := sched.Server{Name: hb.Name, CPU: int64(hb.CPUs) * 1000, Mem: int64(hb.MemTotal), Slots: MaxContainers - hb.Containers, UsedMem: otherMem(hb), UsedCPU: max(hb.CPUOther, 0)}
		switch {
		case !up(hb, now):
			s.Down = "down"
		case len(hb.Degraded) > 0:
			s.Down = "degraded (skein servers says why)"
		case job.Network != "" && hb.Network != job.Network:
			s.Down = "not on network " + job.Network
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for i := range out {
		byServer[out[i].Name] = &out[i]
	}
	groups := map[string]map[string]bool{}
	for _, c := range ctrs {
		j, ok := asks[c.Job]
		s := byServer[c.Server]
		if c.Job == "" || !ok || s == nil || c.Job == job.Name {
			continue
		}
		s.UsedCPU += j.CPU
		s.UsedMem += j.Mem
		if j.Group != "" {
			if groups[c.Server] == nil {
				groups[c.Server] = map[string]bool{}
			}
			groups[c.Server][j.Group] = true
		}
	}
	for _, c := range live {
		if s := byServer[c.Server]; s != nil {
			s.UsedCPU += job.CPU
			s.UsedMem += job.Mem
			s.Instances++
			if job.Group != "" {
				if groups[c.Server] == nil {
					groups[c.Server] = map[string]bool{}
				}
				groups[c.Server][job.Group] = true
			}
		}
	}
	for name, gs := range groups {
		for g := range gs {
			byServer[name].Groups = append(byServer[name].Groups, g)
		}
		sort.Strings(byServer[name].Groups)
	}
	return out
}

// otherMem is the memory in use on a server that no job's instance uses:
// containers launched by hand, databases, load balancers and web
// servers, the host's own processes. The jobs' instances count for what
// they ask (Cluster); the rest counts for what it uses, so that a job is
// not placed in memory that is already taken.
func otherMem(hb events.Heartbeat) int64 {
	if hb.MemAvailable > hb.MemTotal {
		return 0
	}
	used := hb.MemTotal - hb.MemAvailable
	if hb.MemJobs >= used {
		return 0
	}
	return int64(used - hb.MemJobs)
}

// Spec is the scheduler's view of a job.
func Spec(j events.Job, count int) sched.Job {
	return sched.Job{Name: j.Name, Count: count, Replicas: j.Replicas, Group: j.Group, Strategy: j.Strategy, CPU: j.CPU, Mem: j.Mem}
}

// Index is an instance's number (web-3 → 3), 0 for a name that is not one of the job's.
func Index(job, instance string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(instance, job+"-"))
	if err != nil || !strings.HasPrefix(instance, job+"-") || n < 1 {
		return 0
	}
	return n
}

// FreeNames are the first n instance names of a job that no container has.
func FreeNames(job string, taken []events.Container, n int) []string {
	used := map[string]bool{}
	for _, c := range taken {
		used[c.Name] = true
	}
	var out []string
	for i := 1; len(out) < n; i++ {
		name := job + "-" + strconv.Itoa(i)
		if !used[name] {
			out = append(out, name)
		}
	}
	return out
}
