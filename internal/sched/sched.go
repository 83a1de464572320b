// Package sched is skein's scheduler: a pure function from the servers of a
// cluster and a job to a plan, after Nomad's: feasibility first (the server is
// up, has room for one more instance of the job, is under the job's replicas,
// holds the job's group), then ranking (spread: the fewest instances of the job
// and the least used server first; binpack: the most used server that still
// fits first). It reads nothing and changes nothing: the caller feeds it the
// heartbeats and records and applies the plan through the agents' commands.
package sched

import (
	"container/heap"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Strategies.
const (
	// Spread places each instance on the server with the fewest instances of
	// the job, then the least used one: instances spread over the servers.
	Spread = "spread"
	// Binpack places each instance on the most used server that still fits
	// it: one server fills before the next is used.
	Binpack = "binpack"
)

// Server is a server as the scheduler sees it.
type Server struct {
	// Name is the server's name.
	Name string
	// Down says why the server takes nothing ("" when it is up and able).
	Down string
	// CPU is its capacity in millicores (CPUs × 1000); Mem in bytes.
	CPU, Mem int64
	// UsedCPU and UsedMem are what the instances it runs ask for, and what
	// else runs there uses.
	UsedCPU, UsedMem int64
	// Slots is how many more containers it may run.
	Slots int
	// Instances counts the job's instances it runs.
	Instances int
	// Groups are the groups whose instances it runs.
	Groups []string
}

// Job is what to place.
type Job struct {
	// Name is the job's name.
	Name string
	// Count is how many instances to place.
	Count int
	// Replicas is the most instances of the job one server may run (0: no limit).
	Replicas int
	// Group, when set, puts every instance of the group on one server.
	Group string
	// Strategy is Spread (the default) or Binpack.
	Strategy string
	// CPU (millicores) and Mem (bytes) are asked for by each instance.
	CPU, Mem int64
}

// Plan says how many new instances go on each server.
type Plan struct {
	// Place is new instances by server.
	Place map[string]int
	// Order is the servers in the order they were first chosen.
	Order []string
}

// ErrInvalid marks a job the scheduler cannot read.
var ErrInvalid = errors.New("invalid job")

// NoFit says the cluster cannot take the job: only Fit of Count instances
// fit, and why each server stopped taking more.
type NoFit struct {
	Count, Fit int
	// Why is each full server's reason: replicas, containers, cpu, memory,
	// group, or why it is down.
	Why map[string]string
}

func (e *NoFit) Error() string {
	by := map[string][]string{}
	for s, why := range e.Why {
		by[why] = append(by[why], s)
	}
	reasons := make([]string, 0, len(by))
	for why, ss := range by {
		sort.Strings(ss)
		if len(ss) > 3 {
			ss = append(ss[:3], fmt.Sprintf("and %d more", len(ss)-3))
		}
		reasons = append(reasons, fmt.Sprintf("%s: %s", why, strings.Join(ss, ", ")))
	}
	sort.Strings(reasons)
	return fmt.Sprintf("only %d of %d instances fit (%s)", e.Fit, e.Count, strings.Join(reasons, "; "))
}

// full says why s cannot take one more instance of job, "" when it can.
func full(s *Server, job Job) string {
	switch {
	case s.Down != "":
		return s.Down
	case job.Replicas > 0 && s.Instances >= job.Replicas:
		return fmt.Sprintf("at the job's %d replicas per server", job.Replicas)
	case s.Slots <= 0:
		return "no room for more containers"
	case job.CPU > 0 && s.UsedCPU+job.CPU > s.CPU:
		return "not enough CPU"
	case job.Mem > 0 && s.UsedMem+job.Mem > s.Mem:
		return "not enough memory"
	}
	return ""
}

// take places one instance on s.
func take(s *Server, job Job) {
	s.Instances++
	s.Slots--
	s.UsedCPU += job.CPU
	s.UsedMem += job.Mem
}

// used is how full s is: its fuller resource, 0 to 1.
func used(s *Server) float64 {
	u := 0.0
	if s.CPU > 0 {
		u = float64(s.UsedCPU) / float64(s.CPU)
	}
	if s.Mem > 0 {
		u = max(u, float64(s.UsedMem)/float64(s.Mem))
	}
	return u
}

// Check refuses a job the scheduler cannot read, saying what to give instead.
func Check(job Job) error {
	switch {
	case job.Count < 1:
		return fmt.Errorf("%w: count %d: want at least 1 instance", ErrInvalid, job.Count)
	case job.Replicas < 0:
		return fmt.Errorf("%w: replicas %d: want 0 (no limit) or more", ErrInvalid, job.Replicas)
	case job.Strategy != "" && job.Strategy != Spread && job.Strategy != Binpack:
		return fmt.Errorf("%w: strategy %q: want spread or binpack", ErrInvalid, job.Strategy)
	case job.CPU < 0 || job.Mem < 0:
		return fmt.Errorf("%w: a negative CPU or memory ask", ErrInvalid)
	case job.Group != "" && job.Replicas > 0 && job.Count > job.Replicas:
		return fmt.Errorf("%w: group %s keeps all %d instances on one server, but replicas is %d: raise -r or leave out -g", ErrInvalid, job.Group, job.Count, job.Replicas)
	}
	return nil
}

// Place plans job.Count new instances of job on servers (whose Instances
// count those the job has already). servers is not changed. A job that does
// not fit gets a *NoFit error and no plan: nothing is half placed.
func Place(servers []Server, job Job) (Plan, error) {
	if err := Check(job); err != nil {
		return Plan{}, err
	}
	ss := make([]Server, len(servers))
	copy(ss, servers)
	if job.Group != "" {
		return placeGroup(ss, job)
	}
	h := &ranking{binpack: job.Strategy == Binpack}
	why := map[string]string{}
	for i := range ss {
		if w := full(&ss[i], job); w != "" {
			why[ss[i].Name] = w
			continue
		}
		h.push(&ss[i])
	}
	heap.Init(h)
	plan := Plan{Place: map[string]int{}}
	for n := 0; n < job.Count; n++ {
		if h.Len() == 0 {
			return Plan{}, &NoFit{Count: job.Count, Fit: n, Why: why}
		}
		s := h.items[0].s
		take(s, job)
		if plan.Place[s.Name] == 0 {
			plan.Order = append(plan.Order, s.Name)
		}
		plan.Place[s.Name]++
		if w := full(s, job); w != "" {
			why[s.Name] = w
			heap.Pop(h)
		} else {
			h.items[0].rank(h.binpack)
			heap.Fix(h, 0)
		}
	}
	return plan, nil
}

// placeGroup puts every instance on one server: the one that holds the
// group already, else the best ranked server that takes them all.
func placeGroup(ss []Server, job Job) (Plan, error) {
	fits := func(s Server) (int, string) {
		for n := 0; n < job.Count; n++ {
			if w := full(&s, job); w != "" {
				return n, w
			}
			take(&s, job)
		}
		return job.Count, ""
	}
	for _, s := range ss {
		for _, g := range s.Groups {
			if g != job.Group {
				continue
			}
			if n, why := fits(s); n < job.Count {
				return Plan{}, &NoFit{Count: job.Count, Fit: n, Why: map[string]string{s.Name: "holds group " + job.Group + ", " + why}}
			}
			return Plan{Place: map[string]int{s.Name: job.Count}, Order: []string{s.Name}}, nil
		}
	}
	h := &ranking{binpack: job.Strategy == Binpack}
	why := map[string]string{}
	best := 0
	for i := range ss {
		n, w := fits(ss[i])
		if n < job.Count {
			why[ss[i].Name] = w
			best = max(best, n)
			continue
		}
		h.push(&ss[i])
	}
	if h.Len() == 0 {
		return Plan{}, &NoFit{Count: job.Count, Fit: best, Why: why}
	}
	heap.Init(h)
	name := h.items[0].s.Name
	return Plan{Place: map[string]int{name: job.Count}, Order: []string{name}}, nil
}

// ranked is a server in the ranking with its key.
type ranked struct {
	s         *Server
	instances int
	used      float64
}

func (r *ranked) rank(binpack bool) {
	r.instances, r.used = r.s.Instances, used(r.s)
	if binpack {
		// The most used first; among equals, the one with the most of the job.
		r.used, r.instances = -r.used, -r.instances
	}
}

// ranking is a heap of the servers that can take an instance, best first.
type ranking struct {
	items   []*ranked
	binpack bool
}

func (h *ranking) push(s *Server) {
	r := &ranked{s: s}
	r.rank(h.binpack)
	h.items = append(h.items, r)
}

func (h *ranking) Len() int { return len(h.items) }
func (h *ranking) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	if h.binpack {
		if a.used != b.used {
			return a.used < b.used
		}
		if a.instances != b.instances {
			return a.instances < b.instances
		}
	} else {
		if a.instances != b.instances {
			return a.instances < b.instances
		}
		if a.used != b.used {
			return a.used < b.used
		}
	}
	return a.s.Name < b.s.Name
}
func (h *ranking) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *ranking) Push(x any)    { h.items = append(h.items, x.(*ranked)) }
func (h *ranking) Pop() any {
	old := h.items
	x := old[len(old)-1]
	h.items = old[:len(old)-1]
	return x
}
