package jobs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/sched"
)

// settle is how long a new leader waits before it acts: commands its
// predecessor sent just before it stopped land meanwhile.
const settle = 2 * time.Second

// failedPause is how long a server where an instance failed to launch is left out.
const failedPause = 30 * time.Second

// drain is how long an instance taken out of its load balancer keeps running
// before it stops, for the requests it was serving.
const drain = time.Second

// flight is a launch in progress.
type flight struct {
	server  string
	version int
}

// Run takes part in the election until ctx ends; while this scheduler leads,
// it keeps what runs equal to the jobs.
func (s *Scheduler) Run(ctx context.Context) {
	for ctx.Err() == nil {
		rec := events.SchedulerLeader{ID: s.cfg.ID, Since: time.Now().UTC()}
		rev, err := s.lease.Create(ctx, leaderKey, rec)
		if errors.Is(err, bus.ErrExists) {
			rev, err = s.takeForged(ctx, rec)
		}
		if err != nil {
			sleep(ctx, events.SchedulerLease/3)
			continue
		}
		s.lead(ctx, rev)
	}
}

// lead renews the lease every third of its life and reconciles until the
// lease is lost (another took it, or the bus would not renew it in time).
func (s *Scheduler) lead(ctx context.Context, rev uint64) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.down = map[string]time.Time{}
	s.healthySince = map[string]time.Time{}
	s.progress = map[string]time.Time{}
	s.mu.Unlock()
	s.cfg.Log.Info().Str("id", s.cfg.ID).Msg("scheduler leads")
	go func() {
		sleep(lctx, settle)
		t := time.NewTicker(s.cfg.Every)
		defer t.Stop()
		for lctx.Err() == nil {
			s.reconcile(lctx)
			select {
			case <-lctx.Done():
			case <-t.C:
			}
		}
	}()
	t := time.NewTicker(events.SchedulerLease / 3)
	defer t.Stop()
	rec := events.SchedulerLeader{ID: s.cfg.ID, Since: time.Now().UTC()}
	for {
		select {
		case <-ctx.Done():
			// Step down at once so that another takes over without waiting for the lease.
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = s.lease.Delete(dctx, leaderKey, rev)
			dcancel()
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, events.SchedulerLease/3)
		next, err := s.lease.Update(rctx, leaderKey, rec, rev)
		if errors.Is(err, bus.ErrConflict) {
			switch cur, gerr := s.lease.Get(rctx, leaderKey); {
			case gerr == nil && cur.Value.ID == s.cfg.ID:
				// Another server's copy stored over the lease and put back since
				// (bus.KeepKeys): still this scheduler's, at a new revision.
				next, err = s.lease.Update(rctx, leaderKey, rec, cur.Revision)
			case errors.Is(gerr, bus.ErrNotSigned):
				// The copy not put back yet: no scheduler holds the lease, this one keeps it.
				next, err = s.takeForged(rctx, rec)
			case errors.Is(gerr, bus.ErrNoRecord):
				// A deletion's marker stored over it: made again, unless another scheduler is first.
				next, err = s.lease.Create(rctx, leaderKey, rec)
			}
		}
		rcancel()
		if err != nil {
			s.cfg.Log.Warn().Err(err).Msg("scheduler lost the lead")
			return
		}
		rev = next
	}
}

// takeForged takes the lease when what its key holds is no scheduler's (a
// copy another server had stored there): written over, at its revision.
// ErrExists when a scheduler holds it.
func (s *Scheduler) takeForged(ctx context.Context, rec events.SchedulerLeader) (uint64, error) {
	_, err := s.lease.Get(ctx, leaderKey)
	if !errors.Is(err, bus.ErrNotSigned) {
		return 0, fmt.Errorf("lease: %w", bus.ErrExists)
	}
	rev, err := s.lease.Revision(ctx, leaderKey)
	if err != nil {
		return 0, err
	}
	s.cfg.Log.Warn().Msg("the scheduler's lease holds a record no scheduler wrote: taken over")
	return s.lease.Update(ctx, leaderKey, rec, rev)
}

// view is what one pass of the reconciler read.
type view struct {
	now      time.Time
	jobs     []events.Job
	hbs      []events.Heartbeat
	ctrs     []events.Container
	up       map[string]bool
	lost     func(server string) bool
	pending  map[string]flight
	dropping map[string]bool
	// published are container/service pairs with a definition.
	published map[string]bool
	// passing are the containers whose checks all pass.
	passing map[string]bool
}

// read reads what a pass needs. What is in flight is read before the
// records: a launch that ends in between is then in both (and counted once),
// never in neither.
func (s *Scheduler) read(ctx context.Context) (*view, error) {
	v := &view{pending: map[string]flight{}, dropping: map[string]bool{}, up: map[string]bool{}, published: map[string]bool{}, passing: map[string]bool{}}
	s.mu.Lock()
	for k, f := range s.pending {
		v.pending[k] = f
	}
	for k := range s.dropping {
		v.dropping[k] = true
	}
	s.mu.Unlock()
	var err error
	if v.jobs, err = s.jobs.Values(ctx); err != nil || len(v.jobs) == 0 {
		// No job: the other buckets need not be read every second.
		return v, err
	}
	if v.hbs, err = s.hbs.Values(ctx); err != nil {
		return nil, err
	}
	if v.ctrs, err = s.ctrs.Values(ctx); err != nil {
		return nil, err
	}
	defs, err := s.defs.Values(ctx)
	if err != nil {
		return nil, err
	}
	health, err := s.health.Values(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range defs {
		for _, sv := range d.Services {
			v.published[d.Container+"/"+sv.Name] = true
		}
	}
	for _, h := range health {
		v.passing[h.Container] = h.Passing
	}
	v.now = time.Now()
	for _, hb := range v.hbs {
		v.up[hb.Name] = up(hb, v.now)
	}
	s.mu.Lock()
	for name, isUp := range v.up {
		if isUp {
			delete(s.down, name)
		} else if _, ok := s.down[name]; !ok {
			s.down[name] = v.now
		}
	}
	down := map[string]time.Time{}
	for k, t := range s.down {
		down[k] = t
	}
	s.mu.Unlock()
	v.lost = func(server string) bool {
		since, ok := down[server]
		return ok && v.now.Sub(since) >= s.cfg.Grace
	}
	return v, nil
}

// reconcile compares every job with what runs and acts on the difference.
func (s *Scheduler) reconcile(ctx context.Context) {
	v, err := s.read(ctx)
	if err != nil {
		s.cfg.Log.Warn().Err(err).Msg("reading the cluster")
		return
	}
	for _, job := range v.jobs {
		s.reconcileJob(ctx, v, job)
	}
}

// healthy says whether an instance serves: running, and, for a job with a
// service, passing its checks.
func (v *view) healthy(job events.Job, c events.Container) bool {
	if c.Status != "Running" || !v.up[c.Server] {
		return false
	}
	return job.Service == "" || v.passing[c.Name]
}

func (s *Scheduler) reconcileJob(ctx context.Context, v *view, job events.Job) {
	var mine []events.Container
	for _, c := range v.ctrs {
		if c.Job == job.Name {
			mine = append(mine, c)
		}
	}
	if job.Deleting {
		s.remove(ctx, job, mine, v)
		return
	}
	var live []events.Container
	gone := 0
	for _, c := range mine {
		if _, busy := v.pending[c.Name]; busy || v.dropping[c.Name] {
			continue
		}
		if v.lost(c.Server) {
			gone++
			continue
		}
		live = append(live, c)
		switch {
		case !v.up[c.Server]:
		case c.Status == "Stopped":
			s.act(ctx, c.Server, events.TypeStart, events.ContainerAction{Name: c.Name})
		case c.Status == "Running" && job.Service != "" && !v.published[c.Name+"/"+job.Service]:
			s.publish(ctx, job, c.Name, c.Server)
		}
	}
	for name, f := range v.pending {
		// A launch sent to a server since lost ends when it returns, as an extra.
		if Index(job.Name, name) > 0 && !v.lost(f.server) {
			live = append(live, events.Container{Name: name, Server: f.server, Job: job.Name, JobVersion: f.version})
		}
	}
	s.trackHealth(v, job, live)
	if ro := job.Rollout; ro != nil && (ro.Status == "running" || ro.Status == "reverting") {
		s.roll(ctx, v, job, live, mine)
		return
	}
	s.syncLB(ctx, v, job, live, nil)
	switch {
	case len(live) < job.Count:
		cause := "placed"
		if gone > 0 {
			cause = "replaced"
		}
		s.place(ctx, v, job, live, mine, job.Count-len(live), cause)
	case len(live) > job.Count:
		s.trim(ctx, v, job, live, len(live)-job.Count)
	}
}

// trackHealth notes since when each instance of the job has been healthy.
func (s *Scheduler) trackHealth(v *view, job events.Job, live []events.Container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range live {
		if v.healthy(job, c) {
			if _, ok := s.healthySince[c.Name]; !ok {
				s.healthySince[c.Name] = v.now
			}
		} else {
			delete(s.healthySince, c.Name)
		}
	}
}

// ready says whether an instance has been healthy for at least d.
func (s *Scheduler) ready(name string, now time.Time, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	since, ok := s.healthySince[name]
	return ok && now.Sub(since) >= d
}

// place launches n more instances of job where the scheduler puts them
// (as many as fit when not all do), at the job's version; it says how many.
func (s *Scheduler) place(ctx context.Context, v *view, job events.Job, live, mine []events.Container, n int, cause string) int {
	servers := Cluster(v.hbs, v.ctrs, v.jobs, job, live, v.now)
	s.mu.Lock()
	for i := range servers {
		// A server where a launch just failed is left alone for a while, not retried every pass.
		if at, ok := s.failed[job.Name+"/"+servers[i].Name]; ok && time.Since(at) < failedPause && servers[i].Down == "" {
			servers[i].Down = "a launch failed there lately"
		}
	}
	s.mu.Unlock()
	plan, err := sched.Place(servers, Spec(job, n))
	var nf *sched.NoFit
	if errors.As(err, &nf) && nf.Fit > 0 {
		plan, err = sched.Place(servers, Spec(job, nf.Fit))
	}
	if err != nil {
		s.cfg.Log.Warn().Err(err).Str("job", job.Name).Msg("cannot place")
		return 0
	}
	// Names taken by any instance, lost ones and launches in flight included:
	// a lost server's instances come back under their names.
	taken := append([]events.Container(nil), mine...)
	for name := range v.pending {
		taken = append(taken, events.Container{Name: name})
	}
	names := FreeNames(job.Name, taken, n)
	i := 0
	for _, server := range plan.Order {
		for k := 0; k < plan.Place[server]; k++ {
			name := names[i]
			i++
			s.mu.Lock()
			s.pending[name] = flight{server: server, version: job.Version}
			s.mu.Unlock()
			go s.launch(context.WithoutCancel(ctx), job, name, server, cause)
		}
	}
	return i
}

// launch launches one instance through its server's agent and publishes it.
func (s *Scheduler) launch(ctx context.Context, job events.Job, name, server, cause string) {
	defer func() {
		s.mu.Lock()
		delete(s.pending, name)
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	ev := events.JobInstanceEvent{Job: job.Name, Instance: name, Server: server, Cause: cause}
	if _, err := s.do(ctx, server, events.TypeLaunch, events.Launch{Name: name, Image: job.Image, Job: job.Name, JobVersion: job.Version}); err != nil {
		ev.Cause, ev.Error = "failed", err.Error()
		s.mu.Lock()
		s.failed[job.Name+"/"+server] = time.Now()
		s.mu.Unlock()
		s.cfg.Log.Warn().Err(err).Str("job", job.Name).Str("instance", name).Str("server", server).Msg("launching an instance")
		_ = s.pub.Publish(ctx, events.TypeJobPlaced, ev)
		return
	}
	if job.Service != "" {
		s.publish(ctx, job, name, server)
	}
	s.cfg.Log.Info().Str("job", job.Name).Str("instance", name).Str("server", server).Str("cause", cause).Int("version", job.Version).Msg("instance placed")
	_ = s.pub.Publish(ctx, events.TypeJobPlaced, ev)
}

// publish defines an instance's service and its TCP check.
func (s *Scheduler) publish(ctx context.Context, job events.Job, name, server string) {
	if _, err := s.do(ctx, server, events.TypeServiceAdd, events.ServiceAdd{Container: name, Name: job.Service, Port: job.Port}); err != nil {
		s.cfg.Log.Warn().Err(err).Str("instance", name).Msg("publishing an instance")
		return
	}
	check := events.CheckDef{Name: "port", Kind: "tcp", Port: job.Port, Interval: "1s", Timeout: "500ms"}
	if _, err := s.do(ctx, server, events.TypeCheckAdd, events.CheckAdd{Container: name, Check: check}); err != nil {
		s.cfg.Log.Warn().Err(err).Str("instance", name).Msg("checking an instance")
	}
}

// trim removes n instances: from the servers with the most of the job first,
// the highest numbers first.
func (s *Scheduler) trim(ctx context.Context, v *view, job events.Job, live []events.Container, n int) {
	per := map[string]int{}
	for _, c := range live {
		per[c.Server]++
	}
	var cands []events.Container
	for _, c := range live {
		if _, busy := v.pending[c.Name]; !busy && v.up[c.Server] {
			cands = append(cands, c)
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if per[a.Server] != per[b.Server] {
			return per[a.Server] > per[b.Server]
		}
		return Index(job.Name, a.Name) > Index(job.Name, b.Name)
	})
	if len(cands) > n {
		cands = cands[:n]
	}
	retiring := map[string]bool{}
	for _, c := range cands {
		retiring[c.Name] = true
	}
	if job.LB != "" && s.syncLB(ctx, v, job, live, retiring) != nil {
		return // not out of the load balancer: not stopped either
	}
	for _, c := range cands {
		s.drop(ctx, job, c, "excess", job.LB != "")
	}
}

// remove takes a deleted job's instances away (out of its load balancer
// first), then the job.
func (s *Scheduler) remove(ctx context.Context, job events.Job, mine []events.Container, v *view) {
	left := len(mine)
	for name := range v.pending {
		if Index(job.Name, name) > 0 {
			left++
		}
	}
	if job.LB != "" && s.syncLB(ctx, v, job, nil, nil) != nil {
		return
	}
	for _, c := range mine {
		if _, busy := v.pending[c.Name]; !busy && v.up[c.Server] {
			s.drop(ctx, job, c, "deleted", job.LB != "")
		}
	}
	if left == 0 {
		if err := s.jobs.Delete(ctx, bus.Key("job", job.Name), 0); err != nil {
			s.cfg.Log.Warn().Err(err).Str("job", job.Name).Msg("forgetting a job")
		} else {
			s.changed(ctx, job, "deleted")
		}
	}
}

// drop deletes one instance (in the background, once at a time); one that
// was in a load balancer is given time to finish its requests first.
func (s *Scheduler) drop(ctx context.Context, job events.Job, c events.Container, cause string, drained bool) {
	s.mu.Lock()
	if _, busy := s.pending[c.Name]; busy || s.dropping[c.Name] {
		s.mu.Unlock()
		return
	}
	s.dropping[c.Name] = true
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.dropping, c.Name)
			delete(s.healthySince, c.Name)
			delete(s.toldReady, c.Name)
			delete(s.toldLaunch, c.Name)
			s.mu.Unlock()
		}()
		if drained {
			sleep(ctx, drain)
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if _, err := s.do(dctx, c.Server, events.TypeDelete, events.ContainerAction{Name: c.Name, Force: true}); err != nil {
			s.cfg.Log.Warn().Err(err).Str("instance", c.Name).Msg("removing an instance")
			return
		}
		s.cfg.Log.Info().Str("job", job.Name).Str("instance", c.Name).Str("server", c.Server).Str("cause", cause).Msg("instance removed")
		_ = s.pub.Publish(dctx, events.TypeJobRemoved, events.JobInstanceEvent{Job: job.Name, Instance: c.Name, Server: c.Server, Cause: cause})
	}()
}

// syncLB makes the job's load balancer's backends (those named after its
// instances; others are left alone) the healthy instances, less those
// retiring; with a rollout, new instances join once ready. It returns once
// the load balancer has taken the change.
func (s *Scheduler) syncLB(ctx context.Context, v *view, job events.Job, live []events.Container, retiring map[string]bool) error {
	if job.LB == "" {
		return nil
	}
	e, err := s.lbs.FindByName(ctx, job.LB)
	if err != nil || e == nil {
		s.cfg.Log.Warn().Err(err).Str("job", job.Name).Str("lb", job.LB).Msg("the job's load balancer is not there")
		return fmt.Errorf("load balancer %s not found", job.LB)
	}
	lb := e.Value
	inLB := map[string]bool{}
	for _, b := range lb.Backends {
		inLB[b.Name] = true
	}
	want := map[string]events.Backend{}
	for _, c := range live {
		if retiring[c.Name] || !v.healthy(job, c) || c.IPv4 == "" {
			continue
		}
		// During a rollout a new instance joins once ready; one already in stays
		// (a new leader does not know how long it has been healthy).
		if ro := job.Rollout; ro != nil && (ro.Status == "running" || ro.Status == "reverting") && c.JobVersion == job.Version &&
			!inLB[c.Name] && !s.ready(c.Name, v.now, time.Duration(ro.MinHealthy)*time.Second) {
			continue
		}
		want[c.Name] = events.Backend{Name: c.Name, Host: c.IPv4, Port: job.Port}
	}
	var add []events.Backend
	var del []string
	have := map[string]bool{}
	for _, b := range lb.Backends {
		if Index(job.Name, b.Name) == 0 {
			continue
		}
		have[b.Name] = true
		if w, ok := want[b.Name]; !ok {
			del = append(del, b.Name)
		} else if w != b {
			add = append(add, w)
		}
	}
	for name, b := range want {
		if !have[name] {
			add = append(add, b)
		}
	}
	sort.Slice(add, func(i, j int) bool { return add[i].Name < add[j].Name })
	sort.Strings(del)
	// New backends first, then the old ones go: the load balancer is never emptier than it must be.
	if len(add) > 0 {
		if _, err := s.do(ctx, lb.Server, events.TypeLBBackendsAdd, events.LBBackends{LB: lb.Name, Backends: add}); err != nil {
			s.cfg.Log.Warn().Err(err).Str("lb", lb.Name).Msg("adding backends")
			return err
		}
	}
	if len(del) > 0 {
		if _, err := s.do(ctx, lb.Server, events.TypeLBBackendsDelete, events.LBBackendNames{LB: lb.Name, Names: del}); err != nil {
			s.cfg.Log.Warn().Err(err).Str("lb", lb.Name).Msg("removing backends")
			return err
		}
	}
	return nil
}

// act sends a command whose result only the log needs.
func (s *Scheduler) act(ctx context.Context, server, typ string, payload any) {
	go func() {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if _, err := s.do(actx, server, typ, payload); err != nil {
			s.cfg.Log.Warn().Err(err).Str("server", server).Str("type", typ).Msg("scheduler command")
		}
	}()
}

// do sends one command to a server's agent and waits for its result.
func (s *Scheduler) do(ctx context.Context, server, typ string, payload any) (*events.Result, error) {
	env, err := s.client.NewCommand(server, typ, "", payload)
	if err != nil {
		return nil, err
	}
	res, err := s.client.Do(ctx, bus.Call{Envelope: env})
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", typ, server, err)
	}
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
