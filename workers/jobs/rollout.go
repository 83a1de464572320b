package jobs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/workers"
)

// Upgrade starts a rolling upgrade of a job to a new version (a new image, or
// the same one again): the leader replaces the instances, each new one
// healthy for MinHealthy seconds before an old one leaves the load balancer
// and stops; one that is not healthy within Deadline seconds reverts it.
func (s *Scheduler) Upgrade(ctx context.Context, req *workers.Request, p events.JobUpgrade) (events.Job, error) {
	e, err := s.jobs.Find(ctx, bus.Key("job", p.Name))
	if err != nil {
		return events.Job{}, workers.FromStore(err, "job "+p.Name)
	}
	if e == nil {
		return events.Job{}, workers.NotFound("no job named %s: `skein listjobs` shows them", p.Name)
	}
	job := e.Value
	if job.Rollout != nil && job.Rollout.Started.Equal(rolloutMark(req)) {
		return job, nil // this very command, redelivered
	}
	switch {
	case job.Deleting:
		return events.Job{}, workers.Conflict("job %s is being deleted", p.Name)
	case job.Rollout != nil && (job.Rollout.Status == "running" || job.Rollout.Status == "reverting"):
		return events.Job{}, workers.Conflict("job %s is being upgraded to version %d (%s): wait for it, `skein listjobs` shows it", p.Name, job.Rollout.To, job.Rollout.Status)
	}
	image := p.Image
	if image == "" {
		image = job.Image
	}
	if image != job.Image {
		req.Progress("image", "looking for image "+image+" on the servers")
		servers, _, err := s.cluster(ctx, job, false)
		if err != nil {
			return events.Job{}, err
		}
		if err := s.withImage(ctx, servers, image); err != nil {
			return events.Job{}, err
		}
	}
	job.Rollout = &events.Rollout{From: job.Version, FromImage: job.Image, To: job.Version + 1, MinHealthy: p.MinHealthy, MaxParallel: p.MaxParallel,
		Deadline: p.Deadline, Status: "running", Started: rolloutMark(req)}
	job.Version, job.Image, job.Updated = job.Version+1, image, time.Now().UTC()
	if _, err := s.jobs.Update(ctx, bus.Key("job", p.Name), job, e.Revision); err != nil {
		return events.Job{}, workers.Conflict("job %s changed meanwhile: try again", p.Name)
	}
	s.tell(ctx, job, "started", "", "", fmt.Sprintf("upgrading %d instances from version %d (%s) to %d (%s), %d at a time, each healthy for %ds", job.Count, job.Rollout.From, job.Rollout.FromImage, job.Version, image, p.MaxParallel, p.MinHealthy))
	return job, nil
}

// rolloutMark is the start time a command gives its rollout: the command's
// own time, so that a redelivery recognises the rollout it started.
func rolloutMark(req *workers.Request) time.Time {
	return req.Envelope.Time.UTC()
}

// tell publishes a rollout step.
func (s *Scheduler) tell(ctx context.Context, job events.Job, step, instance, server, msg string) {
	ev := events.RolloutEvent{Job: job.Name, Version: job.Version, Step: step, Instance: instance, Server: server, Message: msg}
	if err := s.pub.Publish(ctx, events.TypeJobRollout, ev); err != nil {
		s.cfg.Log.Warn().Err(err).Msg("publishing a rollout step")
	}
	s.cfg.Log.Info().Str("job", job.Name).Int("version", job.Version).Str("step", step).Str("instance", instance).Msg(msg)
}

// roll moves a rollout one step: new instances started (at most MaxParallel
// not yet ready), an old one retired (out of the load balancer, then
// stopped) for each new one ready, the rollout reverted when no new instance
// becomes ready within the deadline, and ended when only ready new ones run.
func (s *Scheduler) roll(ctx context.Context, v *view, job events.Job, live, mine []events.Container) {
	ro := job.Rollout
	minHealthy := time.Duration(ro.MinHealthy) * time.Second
	var fresh, old, readyNow []events.Container
	for _, c := range live {
		if c.JobVersion == job.Version {
			fresh = append(fresh, c)
			if s.ready(c.Name, v.now, minHealthy) {
				readyNow = append(readyNow, c)
			}
		} else {
			old = append(old, c)
		}
	}
	ready := len(readyNow)
	var newlyReady []events.Container
	s.mu.Lock()
	last, ok := s.progress[job.Name]
	if !ok || ready > s.readyCount[job.Name] {
		last = v.now
		s.progress[job.Name] = last
	}
	for _, c := range readyNow {
		if !s.toldReady[c.Name] {
			s.toldReady[c.Name] = true
			newlyReady = append(newlyReady, c)
		}
	}
	s.readyCount[job.Name] = ready
	s.mu.Unlock()
	for _, c := range newlyReady {
		if ro.Status == "running" {
			s.tell(ctx, job, "healthy", c.Name, c.Server, fmt.Sprintf("%s on %s has been healthy for %ds", c.Name, c.Server, ro.MinHealthy))
		}
	}

	// Done once the old instances are gone, not only leaving.
	leaving := 0
	for _, c := range mine {
		if c.JobVersion != job.Version && !v.lost(c.Server) {
			leaving++
		}
	}
	if leaving == 0 && len(old) == 0 && ready >= job.Count && len(fresh) == job.Count {
		// Done once the load balancer has the last of them too.
		if err := s.syncLB(ctx, v, job, live, nil); err != nil {
			return
		}
		s.endRollout(ctx, job)
		return
	}
	if v.now.Sub(last) > time.Duration(ro.Deadline)*time.Second+minHealthy {
		s.failRollout(ctx, job, fmt.Sprintf("no new instance of version %d became healthy within %ds", job.Version, ro.Deadline))
		return
	}
	// Retire one old instance for each new one ready, the unhealthy ones first.
	sort.Slice(old, func(i, j int) bool {
		hi, hj := v.healthy(job, old[i]), v.healthy(job, old[j])
		if hi != hj {
			return !hi
		}
		return Index(job.Name, old[i].Name) > Index(job.Name, old[j].Name)
	})
	if extra := len(old) - (job.Count - ready); extra > 0 {
		if s.retire(ctx, v, job, live, old[:extra]) {
			return
		}
	}
	if err := s.syncLB(ctx, v, job, live, nil); err != nil {
		return
	}
	// Start new instances: at most MaxParallel not yet ready at once.
	if n := min(ro.MaxParallel-(len(fresh)-ready), job.Count-len(fresh)); n > 0 {
		if s.place(ctx, v, job, live, mine, n, "upgrade") == 0 && len(fresh) == ready && len(old) > 0 {
			// No room for a new instance beside the old ones (-r, or capacity):
			// make room by retiring an old one first, one at a time, as
			// Nomad's destructive updates do.
			s.retire(ctx, v, job, live, old[:1])
			return
		}
		var started []string
		s.mu.Lock()
		for name, f := range s.pending {
			if f.version == job.Version && Index(job.Name, name) > 0 && !s.toldLaunch[name] {
				s.toldLaunch[name] = true
				started = append(started, name+"@"+f.server)
			}
		}
		s.mu.Unlock()
		sort.Strings(started)
		for _, st := range started {
			name, server, _ := strings.Cut(st, "@")
			s.tell(ctx, job, "launched", name, server, fmt.Sprintf("%s (version %d, %s) starting on %s", name, job.Version, job.Image, server))
		}
	}
}

// retire takes old instances out of the load balancer, then stops them; it
// says whether any went.
func (s *Scheduler) retire(ctx context.Context, v *view, job events.Job, live, old []events.Container) bool {
	retiring := map[string]bool{}
	var out []events.Container
	for _, c := range old {
		if _, busy := v.pending[c.Name]; busy || !v.up[c.Server] {
			continue
		}
		retiring[c.Name] = true
		out = append(out, c)
	}
	if len(out) == 0 {
		return false
	}
	if err := s.syncLB(ctx, v, job, live, retiring); err != nil {
		return true
	}
	for _, c := range out {
		s.tell(ctx, job, "retired", c.Name, c.Server, fmt.Sprintf("%s (version %d) left the load balancer and stops", c.Name, c.JobVersion))
		s.drop(ctx, job, c, "upgraded", job.LB != "")
	}
	return true
}

// endRollout records a finished rollout: done, or reverted.
func (s *Scheduler) endRollout(ctx context.Context, job events.Job) {
	step := "done"
	if job.Rollout.Status == "reverting" {
		step = "reverted"
	}
	e, err := s.jobs.Modify(ctx, bus.Key("job", job.Name), func(j events.Job, exists bool) (events.Job, error) {
		if !exists || j.Rollout == nil || j.Version != job.Version {
			return j, fmt.Errorf("job %s changed", job.Name)
		}
		j.Rollout.Status, j.Rollout.Ended, j.Updated = step, time.Now().UTC(), time.Now().UTC()
		return j, nil
	})
	if err != nil {
		return
	}
	msg := fmt.Sprintf("all %d instances run version %d (%s)", job.Count, job.Version, job.Image)
	if step == "reverted" {
		msg = fmt.Sprintf("reverted: all %d instances run version %d (%s) again; %s", job.Count, job.Version, job.Image, e.Value.Rollout.Reason)
	}
	s.tell(ctx, e.Value, step, "", "", msg)
}

// failRollout reverts a running rollout (the job goes back to the version it
// came from, whose instances then replace the new ones the same way); a
// revert that fails too stops where it is.
func (s *Scheduler) failRollout(ctx context.Context, job events.Job, reason string) {
	e, err := s.jobs.Modify(ctx, bus.Key("job", job.Name), func(j events.Job, exists bool) (events.Job, error) {
		if !exists || j.Rollout == nil || j.Version != job.Version {
			return j, fmt.Errorf("job %s changed", job.Name)
		}
		ro := j.Rollout
		if ro.Status == "running" {
			ro.Status, ro.Reason = "reverting", reason
			j.Version, j.Image = ro.From, ro.FromImage
		} else {
			ro.Status, ro.Reason, ro.Ended = "failed", ro.Reason+"; the revert failed too: "+reason, time.Now().UTC()
		}
		j.Updated = time.Now().UTC()
		return j, nil
	})
	if err != nil {
		return
	}
	s.mu.Lock()
	delete(s.progress, job.Name)
	delete(s.readyCount, job.Name)
	s.mu.Unlock()
	step := "reverting"
	if e.Value.Rollout.Status == "failed" {
		step = "failed"
	}
	s.tell(ctx, e.Value, step, "", "", reason)
}
