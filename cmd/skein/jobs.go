package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/metrics"
	"github.com/skeinhq/skein/internal/validate"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/jobs"
)

// parseSize reads a memory size: 512M, 2G, 1048576.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > 1<<50/mult {
		return 0, fmt.Errorf("bad size %q: a number with K, M or G, e.g. 256M", s)
	}
	return n * mult, nil
}

// toScheduler connects to the bus and makes sure a scheduler leads, or says
// how to start one.
func toScheduler(ctx context.Context, g *globals) (*cli, error) {
	cl, err := g.connect(ctx)
	if err != nil {
		return nil, err
	}
	st, err := open[events.SchedulerLeader](ctx, cl)
	if err == nil {
		var e *bus.Entry[events.SchedulerLeader]
		if e, err = st.Find(ctx, "scheduler.leader"); err == nil && e == nil {
			err = fmt.Errorf("no scheduler is running: `skein server` runs one (unless --no-scheduler), or start `skein scheduler`")
		}
	}
	if err != nil {
		cl.close()
		return nil, err
	}
	return cl, nil
}

func addjobCmd(g *globals) *cobra.Command {
	var network, group, strategy, name, service, mem, lb string
	var replicas, port int
	var cpu int64
	var plan, detach bool
	c := &cobra.Command{
		Use:   "addjob IMAGE|CONTAINER COUNT [-n NETWORK] [-g GROUP] [-r REPLICAS] [-s spread|binpack] [--name JOB] [--service NAME --port P [--lb LB]] [--plan]",
		Short: "Run COUNT instances of an image (or of a container's image) across the servers",
		Long: `Run COUNT instances of an image, or of the image a container runs, across the
servers that are up: the scheduler filters the servers that can take an instance
(up, room for its --cpu and --mem, under -r per server, holding the group of -g,
on the network of -n, having the image), then ranks them: spread (the default)
puts each instance on the server with the fewest of the job, then the least
used; binpack fills the most used server first. The instances are JOB-1, JOB-2,
...; the scheduler keeps COUNT of them running, placing those of a server down
for longer than its grace period elsewhere. --service publishes them in
discovery on --port, checked over TCP; --lb keeps a load balancer's backends
equal to the instances that pass that check. --plan prints the placement and
changes nothing.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			count, err := strconv.Atoi(args[1])
			if err != nil || count < 1 || count > 10000 {
				return fmt.Errorf("bad count %q: a number of instances from 1 to 10000", args[1])
			}
			if replicas < 0 {
				return fmt.Errorf("-r %d: the most instances per server, 0 for no limit", replicas)
			}
			if strategy != "spread" && strategy != "binpack" {
				return fmt.Errorf("-s %q: spread or binpack", strategy)
			}
			for flag, v := range map[string]string{"-n": network, "-g": group} {
				if v != "" && !validate.Name.Valid(v) {
					return fmt.Errorf("%s %q: want %s", flag, v, validate.Name.What)
				}
			}
			if service != "" && !validate.Service.Valid(service) {
				return fmt.Errorf("--service %q: want %s", service, validate.Service.What)
			}
			if (service == "") != (port == 0) {
				return fmt.Errorf("--service and --port go together: the service is published on that port and checked there")
			}
			if port < 0 || port > 65535 {
				return fmt.Errorf("--port %d: want 1 to 65535", port)
			}
			if lb != "" && (!validate.Name.Valid(lb) || service == "") {
				return fmt.Errorf("--lb %q: a load balancer's name, with --service and --port (it sends to the instances that pass their checks)", lb)
			}
			if cpu < 0 {
				return fmt.Errorf("--cpu %d: millicores, 0 or more", cpu)
			}
			memBytes, err := parseSize(mem)
			if err != nil {
				return fmt.Errorf("--mem: %w", err)
			}
			ctx := cmd.Context()
			cl, err := toScheduler(ctx, g)
			if err != nil {
				return err
			}
			defer cl.close()
			image := args[0]
			base, err := find[events.Container](ctx, cl, args[0], bus.ErrNoRecord)
			switch {
			case err == nil:
				image = base.Image
			case !errors.Is(err, bus.ErrNoRecord):
				return err
			case !validate.Image.Valid(image):
				return fmt.Errorf("%q is neither a container nor an image alias (%s)", image, validate.Image.What)
			}
			if name == "" {
				name = jobName(args[0])
			}
			if !validate.Name.Valid(name) || len(name) > 48 {
				return fmt.Errorf("job name %q: 1-48 letters, digits and '-', starting with a letter (--name)", name)
			}
			p := events.JobAdd{Name: name, Image: image, Count: count, Network: network, Replicas: replicas, Group: group, Strategy: strategy,
				CPU: cpu, Mem: memBytes, Service: service, Port: port, LB: lb, Plan: plan}
			if err := events.Check(events.TypeJobAdd, p); err != nil {
				return err
			}
			start := time.Now()
			res, err := cl.do(ctx, jobs.Name, events.TypeJobAdd, p)
			if err != nil || res == nil {
				return err
			}
			var out events.JobPlan
			if err := json.Unmarshal(res.Output, &out); err != nil {
				return fmt.Errorf("bad result: %w", err)
			}
			if g.output == "json" && (plan || detach) {
				return printJSON(out)
			}
			printPlan(out, plan)
			if plan || detach {
				return nil
			}
			return waitJob(ctx, cl, g, name, count, start)
		},
	}
	c.Flags().StringVarP(&network, "network", "n", "", "only servers whose container network this is")
	c.Flags().StringVarP(&group, "group", "g", "", "keep the instances of the group's jobs on one server")
	c.Flags().IntVarP(&replicas, "replicas", "r", 0, "at most this many instances per server (0: no limit)")
	c.Flags().StringVarP(&strategy, "strategy", "s", "spread", "spread or binpack")
	c.Flags().StringVar(&name, "name", "", "the job's name (default: the image's or container's)")
	c.Flags().StringVar(&service, "service", "", "publish the instances in discovery under this name (with --port)")
	c.Flags().IntVar(&port, "port", 0, "the instances' service port, checked over TCP")
	c.Flags().StringVar(&lb, "lb", "", "keep this load balancer's backends equal to the instances that pass their checks")
	c.Flags().Int64Var(&cpu, "cpu", 100, "CPU each instance asks for, in millicores")
	c.Flags().StringVar(&mem, "mem", "64M", "memory each instance asks for")
	c.Flags().BoolVar(&plan, "plan", false, "print the placement and change nothing")
	c.Flags().BoolVar(&detach, "detach", false, "return once the job is stored, without waiting for its instances")
	return g.acts(c)
}

// jobName makes a job name of an image alias or container name.
func jobName(s string) string {
	if i := strings.LastIndexAny(s, "/:"); i >= 0 {
		s = s[i+1:]
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 48 {
		out = out[:48]
	}
	return out
}

func printPlan(p events.JobPlan, only bool) {
	servers := make([]string, 0, len(p.Place))
	for s := range p.Place {
		servers = append(servers, s)
	}
	sort.Strings(servers)
	var parts []string
	for _, s := range servers {
		parts = append(parts, fmt.Sprintf("%s %d", s, p.Place[s]))
	}
	j := p.Job
	strategy := j.Strategy
	if strategy == "" {
		strategy = "spread"
	}
	fmt.Printf("job %s: %d × %s (%s", j.Name, j.Count, j.Image, strategy)
	if j.Replicas > 0 {
		fmt.Printf(", at most %d per server", j.Replicas)
	}
	if j.Group != "" {
		fmt.Printf(", group %s", j.Group)
	}
	fmt.Printf(")\n")
	if len(parts) == 0 {
		fmt.Println("already placed: nothing to do")
		return
	}
	fmt.Printf("placement: %s\n", strings.Join(parts, ", "))
	if only {
		fmt.Println("plan only: nothing was placed")
	}
}

// waitJob waits until COUNT instances of the job run, telling each as it does.
func waitJob(ctx context.Context, cl *cli, g *globals, name string, count int, start time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	told := map[string]bool{}
	for {
		view, err := readJob(ctx, cl, name)
		if err != nil {
			return err
		}
		for _, in := range view.Instances {
			if in.Status == "Running" && !told[in.Name] {
				told[in.Name] = true
				fmt.Printf("  %s on %s (%s) running\n", in.Name, in.Server, orDash(in.IPv4))
			}
		}
		if view.Running == count && len(view.Instances) == count {
			fmt.Printf("job %s: %d of %d running after %s\n", name, view.Running, count, time.Since(start).Round(100*time.Millisecond))
			if g.output == "json" {
				return printJSON(view)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job %s: %d of %d running after %s: `skein listjobs` and `skein events --type job.placed` say more", name, view.Running, count, g.timeout)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// instanceView is one instance of a job as listjobs shows it.
type instanceView struct {
	Name    string `json:"name"`
	Server  string `json:"server"`
	IPv4    string `json:"ipv4,omitempty"`
	Status  string `json:"status"`
	Version int    `json:"version"`
	// Health is passing or failing (its checks, for a job with a service), or empty.
	Health string `json:"health,omitempty"`
}

// jobView is a job as listjobs shows it.
type jobView struct {
	Name      string          `json:"name"`
	Image     string          `json:"image"`
	Version   int             `json:"version"`
	Count     int             `json:"count"`
	Running   int             `json:"running"`
	Status    string          `json:"status"`
	Strategy  string          `json:"strategy"`
	Replicas  int             `json:"replicas,omitempty"`
	Group     string          `json:"group,omitempty"`
	Service   string          `json:"service,omitempty"`
	LB        string          `json:"lb,omitempty"`
	Rollout   *events.Rollout `json:"rollout,omitempty"`
	Instances []instanceView  `json:"instances"`
}

func jobViews(ctx context.Context, cl *cli) ([]jobView, error) {
	js, err := all[events.Job](ctx, cl)
	if err != nil {
		return nil, err
	}
	ctrs, err := all[events.Container](ctx, cl)
	if err != nil {
		return nil, err
	}
	hbs, err := cl.heartbeats(ctx)
	if err != nil {
		return nil, err
	}
	upNow := map[string]bool{}
	for i := range hbs {
		upNow[hbs[i].Name] = alive(&hbs[i])
	}
	healths, err := all[events.Health](ctx, cl)
	if err != nil {
		return nil, err
	}
	passing := map[string]bool{}
	checked := map[string]bool{}
	for _, h := range healths {
		passing[h.Container], checked[h.Container] = h.Passing, true
	}
	out := []jobView{}
	for _, j := range js {
		v := jobView{Name: j.Name, Image: j.Image, Version: j.Version, Count: j.Count, Strategy: j.Strategy, Replicas: j.Replicas, Group: j.Group, Service: j.Service, LB: j.LB, Rollout: j.Rollout, Instances: []instanceView{}}
		if v.Strategy == "" {
			v.Strategy = "spread"
		}
		for _, c := range ctrs {
			if c.Job != j.Name {
				continue
			}
			in := instanceView{Name: c.Name, Server: c.Server, IPv4: c.IPv4, Status: c.Status, Version: c.JobVersion}
			if !upNow[c.Server] {
				// What a down server last said is not what runs now.
				in.Status = "unknown (server down)"
			}
			if j.Service != "" {
				in.Health = "failing"
				if passing[c.Name] && in.Status == "Running" {
					in.Health = "passing"
				} else if !checked[c.Name] {
					in.Health = "not checked yet"
				}
			}
			v.Instances = append(v.Instances, in)
			if in.Status == "Running" {
				v.Running++
			}
		}
		sort.Slice(v.Instances, func(a, b int) bool {
			return jobs.Index(j.Name, v.Instances[a].Name) < jobs.Index(j.Name, v.Instances[b].Name)
		})
		switch {
		case j.Deleting:
			v.Status = "deleting"
		case j.Rollout != nil && (j.Rollout.Status == "running" || j.Rollout.Status == "reverting"):
			v.Status = "upgrading"
		case v.Running == j.Count && len(v.Instances) == j.Count:
			v.Status = "running"
		case v.Running >= j.Count:
			v.Status = "running (extra instances on servers that were down go)"
		default:
			v.Status = "placing"
		}
		out = append(out, v)
	}
	return out, nil
}

func jobView1(views []jobView, name string) (jobView, bool) {
	for _, v := range views {
		if v.Name == name {
			return v, true
		}
	}
	return jobView{}, false
}

func readJob(ctx context.Context, cl *cli, name string) (jobView, error) {
	views, err := jobViews(ctx, cl)
	if err != nil {
		return jobView{}, err
	}
	v, ok := jobView1(views, name)
	if !ok {
		return jobView{}, fmt.Errorf("no job named %s: `skein listjobs` shows them", name)
	}
	return v, nil
}

func listjobsCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[jobView]{
		use: "listjobs", short: "List the jobs: version, instances with server, address and status",
		headers: []string{"JOB", "IMAGE", "VERSION", "RUNNING", "STATUS", "UPGRADE", "INSTANCES"},
		read:    func(ctx context.Context, cl *cli, _ []string) ([]jobView, error) { return jobViews(ctx, cl) },
		row: func(v jobView) []string {
			var ins []string
			for _, in := range v.Instances {
				h := ""
				if in.Health != "" && in.Health != "passing" {
					h = " " + in.Health
				}
				ins = append(ins, fmt.Sprintf("%s@%s(v%d%s)", in.Name, in.Server, in.Version, h))
			}
			up := "-"
			if ro := v.Rollout; ro != nil {
				up = fmt.Sprintf("%d->%d %s", ro.From, ro.To, ro.Status)
			}
			return []string{v.Name, v.Image, strconv.Itoa(v.Version), fmt.Sprintf("%d/%d", v.Running, v.Count), v.Status, up, orDash(strings.Join(ins, " "))}
		},
	})
}

func upgradejobCmd(g *globals) *cobra.Command {
	var image string
	var interval, parallel, deadline int
	var wait time.Duration
	var detach bool
	c := &cobra.Command{
		Use:   "upgradejob JOB [-i SECONDS] [--image IMAGE] [--max-parallel N] [--deadline SECONDS]",
		Short: "Replace a job's instances one by one with a new version (a new image, or the same one again)",
		Long: `Replace a job's instances with a new version, a rolling upgrade: at most
--max-parallel new instances start at once; each must pass its checks for -i
seconds before an old one leaves the load balancer and stops. When no new
instance becomes healthy within --deadline seconds the rollout stops and
reverts: the instances already replaced are replaced back the same way.
Each step is printed as it happens and is a job.rollout event.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkName(args[0]); err != nil {
				return err
			}
			if image != "" && !validate.Image.Valid(image) {
				return fmt.Errorf("--image %q: want %s", image, validate.Image.What)
			}
			switch {
			case interval < 0 || interval > 3600:
				return fmt.Errorf("-i %d: seconds from 0 to 3600", interval)
			case parallel < 1 || parallel > 100:
				return fmt.Errorf("--max-parallel %d: from 1 to 100", parallel)
			case deadline < 1 || deadline > 3600:
				return fmt.Errorf("--deadline %d: seconds from 1 to 3600", deadline)
			}
			ctx := cmd.Context()
			cl, err := toScheduler(ctx, g)
			if err != nil {
				return err
			}
			defer cl.close()
			// Listen before asking, so that no step is missed.
			cons, err := cl.conn.JS.OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{bus.EventFilter("", events.TypeJobRollout)}, DeliverPolicy: jetstream.DeliverNewPolicy})
			if err != nil {
				return notReady(err)
			}
			it, err := cons.Messages()
			if err != nil {
				return err
			}
			defer it.Stop()
			res, err := cl.do(ctx, jobs.Name, events.TypeJobUpgrade, events.JobUpgrade{Name: args[0], Image: image, MinHealthy: interval, MaxParallel: parallel, Deadline: deadline})
			if err != nil || res == nil {
				return err
			}
			var job events.Job
			if err := json.Unmarshal(res.Output, &job); err != nil {
				return fmt.Errorf("bad result: %w", err)
			}
			if detach {
				fmt.Printf("job %s: upgrading to version %d (%s)\n", job.Name, job.Version, job.Image)
				return nil
			}
			wctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			go func() { <-wctx.Done(); it.Stop() }()
			for {
				m, err := it.Next()
				if err != nil {
					return fmt.Errorf("job %s: still upgrading after %s (the rollout goes on): `skein listjobs` shows it", args[0], wait)
				}
				env, err := events.Decode(m.Data())
				if err != nil {
					continue
				}
				var ev events.RolloutEvent
				if json.Unmarshal(env.Data, &ev) != nil || ev.Job != args[0] {
					continue
				}
				fmt.Printf("%s  %-9s %s\n", env.Time.Local().Format("15:04:05"), ev.Step, ev.Message)
				switch ev.Step {
				case "done":
					return nil
				case "reverted", "failed":
					return fmt.Errorf("job %s: the upgrade %s", args[0], ev.Step)
				}
			}
		},
	}
	c.Flags().IntVarP(&interval, "interval", "i", 10, "seconds each new instance must pass its checks before an old one goes")
	c.Flags().StringVar(&image, "image", "", "the new image (default: the job's image, started again)")
	c.Flags().IntVar(&parallel, "max-parallel", 1, "new instances started at once")
	c.Flags().IntVar(&deadline, "deadline", 60, "seconds a new instance has to become healthy before the rollout reverts")
	c.Flags().DurationVar(&wait, "wait", 30*time.Minute, "how long to follow the rollout")
	c.Flags().BoolVar(&detach, "detach", false, "return once the rollout has started")
	return g.acts(c)
}

func scalejobCmd(g *globals) *cobra.Command {
	var detach bool
	c := &cobra.Command{
		Use:   "scalejob JOB COUNT [--detach]",
		Short: "Change how many instances of a job run (more are placed, fewer removed)",
		Long: `Change how many instances of a job run. More instances are planned against
the servers as they are, as addjob plans them, and refused with how many fit
when they do not; fewer are removed, newest first. The same count again
changes nothing. Waits until COUNT run unless --detach.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkName(args[0]); err != nil {
				return err
			}
			count, err := strconv.Atoi(args[1])
			if err != nil || count < 1 || count > 10000 {
				return fmt.Errorf("COUNT %q: a number of instances from 1 to 10000 (`skein deljob %s` removes the job)", args[1], args[0])
			}
			ctx := cmd.Context()
			cl, err := toScheduler(ctx, g)
			if err != nil {
				return err
			}
			defer cl.close()
			start := time.Now()
			res, err := cl.do(ctx, jobs.Name, events.TypeJobScale, events.JobScale{Name: args[0], Count: count})
			if err != nil || res == nil {
				return err
			}
			var plan events.JobPlan
			if err := json.Unmarshal(res.Output, &plan); err != nil {
				return err
			}
			if len(plan.Place) > 0 {
				printPlan(plan, false)
			}
			if detach {
				fmt.Printf("job %s: scaled to %d\n", args[0], count)
				return nil
			}
			return waitJob(ctx, cl, g, args[0], count, start)
		},
	}
	c.Flags().BoolVar(&detach, "detach", false, "return once the count is stored, without waiting for the instances")
	return g.acts(c)
}

func deljobCmd(g *globals) *cobra.Command {
	var detach bool
	c := &cobra.Command{
		Use:   "deljob JOB",
		Short: "Remove a job: its instances, then the job",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkName(args[0]); err != nil {
				return err
			}
			ctx := cmd.Context()
			cl, err := toScheduler(ctx, g)
			if err != nil {
				return err
			}
			defer cl.close()
			if _, err := cl.do(ctx, jobs.Name, events.TypeJobDelete, events.JobRef{Name: args[0]}); err != nil {
				return err
			}
			if detach {
				fmt.Printf("job %s: being removed\n", args[0])
				return nil
			}
			wctx, cancel := context.WithTimeout(ctx, g.timeout)
			defer cancel()
			for {
				views, err := jobViews(wctx, cl)
				if err != nil {
					return err
				}
				if _, ok := jobView1(views, args[0]); !ok {
					fmt.Printf("deleted job %s\n", args[0])
					return nil
				}
				select {
				case <-wctx.Done():
					return fmt.Errorf("job %s is still being removed after %s: `skein listjobs` shows what is left", args[0], g.timeout)
				case <-time.After(300 * time.Millisecond):
				}
			}
		},
	}
	c.Flags().BoolVar(&detach, "detach", false, "return at once, without waiting for the instances to go")
	return g.acts(c)
}

// runScheduler runs a scheduler on the bus until ctx ends: its handlers on
// the scheduler's subjects (shared by every scheduler) and the election.
func runScheduler(ctx context.Context, o bus.ConnOptions, id string, grace time.Duration, reg *prometheus.Registry, log zerolog.Logger) error {
	o.Name, o.Wait, o.Log = "skein-scheduler", true, log
	conn, err := bus.Connect(o)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := bus.WaitReady(ctx, conn.JS); err != nil {
		return err
	}
	s, err := jobs.New(ctx, jobs.Config{Conn: conn, ID: id, Grace: grace, Log: log.With().Str("worker", "scheduler").Logger()})
	if err != nil {
		return err
	}
	rt := workers.NewRuntime(conn, jobs.Name, log)
	if reg != nil {
		rt.SetMetrics(metrics.NewCommands(reg, jobs.Name))
	}
	s.Register(rt)
	// A job or the lease another server had overwritten or deleted is put back.
	bus.KeepKeys(ctx, conn.JS, bus.SchedulerKept(), func(bucket, key string, err error) {
		log.Warn().Str("bucket", bucket).Str("key", key).Err(err).Msg("a record the scheduler keeps that its writer did not make")
	})
	go s.Run(ctx)
	return rt.Run(ctx)
}

func schedulerCmd(g *globals) *cobra.Command {
	var grace time.Duration
	var id, metricsAddr string
	c := &cobra.Command{
		Use:   "scheduler",
		Short: "Run a job scheduler (skein server runs one; more stand by and take over)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.logger()
			o, err := g.connOptions("skein-scheduler", true, log)
			if err != nil {
				return err
			}
			reg := newRegistry(metricsAddr)
			if err := serveMetrics(cmd.Context(), metricsAddr, reg, log); err != nil {
				return err
			}
			if err := runScheduler(cmd.Context(), o, id, grace, reg, log); err != nil && cmd.Context().Err() == nil {
				fmt.Fprintln(os.Stderr, err)
				return err
			}
			return nil
		},
	}
	c.Flags().DurationVar(&grace, "grace", 10*time.Second, "how long a server may be down before its instances are placed elsewhere")
	c.Flags().StringVar(&id, "id", "", "this scheduler's id in the election (default HOST-PID)")
	c.Flags().StringVar(&metricsAddr, "metrics", "", metricsUsage)
	return c
}
