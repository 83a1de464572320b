// Package jobs is the job scheduler's worker: it takes jobs (job.add,
// job.delete, from any scheduler process), keeps their desired state in the
// store, and, in the one scheduler that leads, keeps what runs equal to it:
// instances placed by the pure scheduler (internal/sched) and launched,
// published and removed through the agents' ordinary commands.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/sched"
	"github.com/skeinhq/skein/workers"
)

// Name is the scheduler's name on the bus: its commands are skein.cmd._scheduler.*.
// It cannot be a server's (server names start with a letter).
const Name = bus.SchedulerName

// leaderKey is the lease's key in the leader bucket.
const leaderKey = "scheduler.leader"

// Config configures a scheduler process.
type Config struct {
	// Conn is its bus connection (scheduler credentials: `skein creds scheduler`).
	Conn *bus.Conn
	// ID tells this scheduler from the others.
	ID string
	// Grace is how long a server may be down before its instances are placed elsewhere.
	Grace time.Duration
	// Every is how often the leader compares what runs with the jobs.
	Every time.Duration
	// Log is its logger.
	Log zerolog.Logger
}

// Scheduler is one scheduler process.
type Scheduler struct {
	cfg    Config
	client *bus.Client
	pub    *bus.Publisher
	jobs   *bus.Store[events.Job]
	ctrs   *bus.Store[events.Container]
	hbs    *bus.Store[events.Heartbeat]
	defs   *bus.Store[events.Definitions]
	health *bus.Store[events.Health]
	lbs    *bus.Store[events.LB]
	lease  *bus.Store[events.SchedulerLeader]

	mu       sync.Mutex
	pending  map[string]flight    // instance → where it is being launched
	dropping map[string]bool      // instances being removed
	failed   map[string]time.Time // job/server → when a launch there last failed
	// healthySince is since when each instance has been healthy, as this leader saw.
	healthySince map[string]time.Time
	// progress is when each rolling job last had one more new instance ready.
	progress   map[string]time.Time
	readyCount map[string]int
	toldReady  map[string]bool
	toldLaunch map[string]bool
	down       map[string]time.Time // server → when it was first seen down
}

// New returns a scheduler.
func New(ctx context.Context, cfg Config) (*Scheduler, error) {
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Grace == 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.Every == 0 {
		cfg.Every = time.Second
	}
	s := &Scheduler{cfg: cfg, client: bus.NewClient(cfg.Conn, "scheduler"), pub: bus.NewPublisher(cfg.Conn.JS, "scheduler", Name),
		pending: map[string]flight{}, dropping: map[string]bool{}, failed: map[string]time.Time{}, down: map[string]time.Time{},
		healthySince: map[string]time.Time{}, progress: map[string]time.Time{}, readyCount: map[string]int{}, toldReady: map[string]bool{}, toldLaunch: map[string]bool{}}
	var err error
	if s.jobs, err = bus.OpenStore[events.Job](ctx, cfg.Conn.JS); err != nil {
		return nil, err
	}
	if s.ctrs, err = bus.OpenStore[events.Container](ctx, cfg.Conn.JS); err != nil {
		return nil, err
	}
	if s.hbs, err = bus.OpenStore[events.Heartbeat](ctx, cfg.Conn.JS); err != nil {
		return nil, err
	}
	if s.defs, err = bus.OpenStore[events.Definitions](ctx, cfg.Conn.JS); err != nil {
		return nil, err
	}
	if s.health, err = bus.OpenStore[events.Health](ctx, cfg.Conn.JS); err != nil {
		return nil, err
	}
	if s.lbs, err = bus.OpenStore[events.LB](ctx, cfg.Conn.JS); err != nil {
		return nil, err
	}
	if s.lease, err = bus.OpenStore[events.SchedulerLeader](ctx, cfg.Conn.JS); err != nil {
		return nil, err
	}
	return s, nil
}

// Register adds the scheduler's handlers to its runtime, in one visible block.
func (s *Scheduler) Register(r *workers.Runtime) {
	workers.Handle(r, workers.Command[events.JobAdd, events.JobPlan]{Type: events.TypeJobAdd, Lock: func(p events.JobAdd) string { return "job/" + p.Name }, Deadline: time.Minute, Run: s.Add})
	workers.Handle(r, workers.Command[events.JobRef, events.Job]{Type: events.TypeJobDelete, Lock: func(p events.JobRef) string { return "job/" + p.Name }, Run: s.Delete})
	workers.Handle(r, workers.Command[events.JobUpgrade, events.Job]{Type: events.TypeJobUpgrade, Lock: func(p events.JobUpgrade) string { return "job/" + p.Name }, Deadline: time.Minute, Run: s.Upgrade})
	workers.Handle(r, workers.Command[events.JobScale, events.JobPlan]{Type: events.TypeJobScale, Lock: func(p events.JobScale) string { return "job/" + p.Name }, Deadline: time.Minute, Run: s.Scale})
}

// Add plans a job against the cluster as it is and stores it: the leader
// places it. A job that does not fit is refused with how many instances fit
// and why; nothing is stored. With Plan set it only plans.
func (s *Scheduler) Add(ctx context.Context, req *workers.Request, p events.JobAdd) (events.JobPlan, error) {
	job := events.Job{JobAdd: p, Version: 1}
	job.Plan = false
	if err := sched.Check(Spec(job, p.Count)); err != nil {
		return events.JobPlan{}, workers.Invalid("%v", err)
	}
	if (p.Service == "") != (p.Port == 0) {
		return events.JobPlan{}, workers.Invalid("--service and --port go together: the service is published on that port and checked there")
	}
	if p.LB != "" {
		if p.Port == 0 {
			return events.JobPlan{}, workers.Invalid("--lb needs --service and --port: the load balancer sends to that port of the instances that pass their checks")
		}
		if lb, err := s.lbs.FindByName(ctx, p.LB); err != nil {
			return events.JobPlan{}, workers.FromStore(err, "load balancer "+p.LB)
		} else if lb == nil {
			return events.JobPlan{}, workers.NotFound("no load balancer named %s: `skein addlb` first, `skein listlbs` shows them", p.LB)
		}
	}
	cur, err := s.jobs.Find(ctx, bus.Key("job", p.Name))
	if err != nil {
		return events.JobPlan{}, workers.FromStore(err, "job "+p.Name)
	}
	if cur != nil {
		if !p.Plan && sameJob(cur.Value.JobAdd, job.JobAdd) {
			return events.JobPlan{Job: cur.Value, Place: map[string]int{}}, nil // the same job again: nothing to do
		}
		return events.JobPlan{}, workers.Conflict("job %s exists: `skein upgradejob %s` changes its image, `skein deljob %s` removes it", p.Name, p.Name, p.Name)
	}
	req.Progress("plan", "planning against the servers that are up")
	servers, _, err := s.cluster(ctx, job, false)
	if err != nil {
		return events.JobPlan{}, err
	}
	if err := s.withImage(ctx, servers, p.Image); err != nil {
		return events.JobPlan{}, err
	}
	plan, err := sched.Place(servers, Spec(job, p.Count))
	var nf *sched.NoFit
	if errors.As(err, &nf) {
		return events.JobPlan{}, workers.Invalid("job %s: %v: lower the count, raise -r, or add servers", p.Name, err)
	}
	if err != nil {
		return events.JobPlan{}, workers.Invalid("%v", err)
	}
	now := time.Now().UTC()
	job.Created, job.Updated = now, now
	out := events.JobPlan{Job: job, Place: plan.Place}
	if p.Plan {
		return out, nil
	}
	if _, err := s.jobs.Create(ctx, bus.Key("job", p.Name), job); err != nil {
		if errors.Is(err, bus.ErrExists) {
			return events.JobPlan{}, workers.Conflict("job %s was added meanwhile: `skein listjobs` shows it", p.Name)
		}
		return events.JobPlan{}, workers.FromStore(err, "job "+p.Name)
	}
	s.changed(ctx, job, "added")
	return out, nil
}

// Delete marks a job for removal: the leader removes its instances, then the job.
func (s *Scheduler) Delete(ctx context.Context, _ *workers.Request, p events.JobRef) (events.Job, error) {
	e, err := s.jobs.Modify(ctx, bus.Key("job", p.Name), func(j events.Job, exists bool) (events.Job, error) {
		if !exists {
			return j, workers.NotFound("no job named %s: `skein listjobs` shows them", p.Name)
		}
		j.Deleting, j.Updated = true, time.Now().UTC()
		return j, nil
	})
	if err != nil {
		return events.Job{}, err
	}
	s.changed(ctx, e.Value, "deleting")
	return e.Value, nil
}

// changed publishes a job.changed event: every change of a job is one.
func (s *Scheduler) changed(ctx context.Context, job events.Job, change string) {
	ev := events.JobChange{Job: job.Name, Change: change, Count: job.Count, Version: job.Version}
	if err := s.pub.Publish(ctx, events.TypeJobChanged, ev); err != nil {
		s.cfg.Log.Warn().Err(err).Str("job", job.Name).Msg("publishing a job change")
	}
}

// Scale sets how many instances of a job run: more are planned against the
// cluster as it is (refused, with how many fit, when they do not), fewer
// leave; the leader places or removes the difference. Refused during a
// rolling upgrade or a removal; the same count again changes nothing.
func (s *Scheduler) Scale(ctx context.Context, req *workers.Request, p events.JobScale) (events.JobPlan, error) {
	e, err := s.jobs.Find(ctx, bus.Key("job", p.Name))
	if err != nil {
		return events.JobPlan{}, workers.FromStore(err, "job "+p.Name)
	}
	if e == nil {
		return events.JobPlan{}, workers.NotFound("no job named %s: `skein listjobs` shows them", p.Name)
	}
	job := e.Value
	// The count before this command's first attempt: an attempt after one
	// whose count landed but whose answer was lost finds it set, and tells
	// it as that one would have.
	before, err := req.Once(ctx, "count-before", func() (string, error) { return strconv.Itoa(job.Count), nil })
	if err != nil {
		return events.JobPlan{}, err
	}
	switch {
	case job.Deleting:
		return events.JobPlan{}, workers.Conflict("job %s is being deleted", p.Name)
	case job.Rollout != nil && (job.Rollout.Status == "running" || job.Rollout.Status == "reverting"):
		return events.JobPlan{}, workers.Conflict("job %s is being upgraded to version %d (%s): scale it when the rollout ends, `skein listjobs` shows it", p.Name, job.Rollout.To, job.Rollout.Status)
	case job.Count == p.Count:
		if before != strconv.Itoa(p.Count) {
			s.changed(ctx, job, "scaled")
		}
		return events.JobPlan{Job: job, Place: map[string]int{}}, nil
	}
	plan := events.JobPlan{Place: map[string]int{}}
	if p.Count > job.Count {
		req.Progress("plan", "planning against the servers that are up")
		servers, live, err := s.cluster(ctx, job, true)
		if err != nil {
			return events.JobPlan{}, err
		}
		if more := p.Count - len(live); more > 0 {
			placed, err := sched.Place(servers, Spec(job, more))
			var nf *sched.NoFit
			if errors.As(err, &nf) {
				return events.JobPlan{}, workers.Invalid("job %s: %d more instances: %v: lower the count, raise -r, or add servers", p.Name, more, err)
			}
			if err != nil {
				return events.JobPlan{}, workers.Invalid("%v", err)
			}
			plan.Place = placed.Place
		}
	}
	job.Count, job.Updated = p.Count, time.Now().UTC()
	// Revision-checked: a write by another scheduler since the read refuses this one.
	if _, err := s.jobs.Update(ctx, bus.Key("job", p.Name), job, e.Revision); err != nil {
		if errors.Is(err, bus.ErrConflict) {
			return events.JobPlan{}, workers.Conflict("job %s changed meanwhile: try again", p.Name)
		}
		return events.JobPlan{}, workers.FromStore(err, "job "+p.Name)
	}
	s.changed(ctx, job, "scaled")
	plan.Job = job
	return plan, nil
}

// sameJob says whether two settings of a job are the same.
func sameJob(a, b events.JobAdd) bool {
	a.Plan, b.Plan = false, false
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// cluster reads the records and builds the scheduler's view for job; with
// countLive, the job's instances count as placed and are returned.
func (s *Scheduler) cluster(ctx context.Context, job events.Job, countLive bool) ([]sched.Server, []events.Container, error) {
	hbs, err := s.hbs.Values(ctx)
	if err != nil {
		return nil, nil, workers.Transient("reading the servers: %v", err)
	}
	ctrs, err := s.ctrs.Values(ctx)
	if err != nil {
		return nil, nil, workers.Transient("reading the containers: %v", err)
	}
	jobs, err := s.jobs.Values(ctx)
	if err != nil {
		return nil, nil, workers.Transient("reading the jobs: %v", err)
	}
	var live []events.Container
	if countLive {
		for _, c := range ctrs {
			if c.Job == job.Name {
				live = append(live, c)
			}
		}
	}
	if job.Network != "" {
		known := false
		var nets []string
		for _, hb := range hbs {
			known = known || hb.Network == job.Network
			nets = append(nets, hb.Network)
		}
		if !known {
			sort.Strings(nets)
			return nil, nil, workers.Invalid("no server has network %s (the servers' networks: %s)", job.Network, strings.Join(nets, ", "))
		}
	}
	return Cluster(hbs, ctrs, jobs, job, live, time.Now()), live, nil
}

// withImage asks the servers that could take the job whether they have its
// image, and sets those without it aside; none having it is an error.
func (s *Scheduler) withImage(ctx context.Context, servers []sched.Server, image string) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	asked, have := 0, 0
	for i := range servers {
		if servers[i].Down != "" {
			continue
		}
		asked++
		wg.Add(1)
		go func(sv *sched.Server) {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			env, err := s.client.NewCommand(sv.Name, events.TypeImageAsk, "", events.ImageAsk{Image: image})
			var ans events.ImageAnswer
			if err == nil {
				var res *events.Result
				if res, err = s.client.Query(qctx, env); err == nil {
					err = json.Unmarshal(res.Output, &ans)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				sv.Down = "did not answer whether it has image " + image
			case !ans.Exists:
				sv.Down = "no image " + image
			default:
				have++
			}
		}(&servers[i])
	}
	wg.Wait()
	if asked > 0 && have == 0 {
		return workers.NotFound("image %q is on none of the servers that are up: `skein images build` or import it first", image)
	}
	return nil
}
