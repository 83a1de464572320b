package events

import "time"

// Job commands, events and state types.
const (
	// TypeJobAdd plans a job and stores it as desired state (or only plans it).
	TypeJobAdd = "job.add"
	// TypeJobDelete marks a job for removal: its instances go, then the job.
	TypeJobDelete = "job.delete"
	// TypeJobPlaced says the scheduler placed an instance of a job on a server.
	TypeJobPlaced = "job.placed"
	// TypeJobRemoved says the scheduler removed an instance of a job.
	TypeJobRemoved = "job.removed"
	// TypeJobUpgrade starts a rolling upgrade of a job.
	TypeJobUpgrade = "job.upgrade"
	// TypeJobScale changes how many instances of a job run.
	TypeJobScale = "job.scale"
	// TypeJobChanged tells that a job was added, scaled, marked for removal or removed.
	TypeJobChanged = "job.changed"
	// TypeJobRollout tells a step of a rolling upgrade.
	TypeJobRollout = "job.rollout"
	// TypeJob is a job's desired state.
	TypeJob = "job"
	// TypeSchedulerLeader is the scheduler that leads now.
	TypeSchedulerLeader = "scheduler.leader"
	// TypeImageAsk asks a server whether it has an image.
	TypeImageAsk = "image.ask"
)

// SchedulerLease is how long a scheduler leads without renewing its lease.
const SchedulerLease = 3 * time.Second

func init() {
	registerCommand[JobAdd, JobPlan](TypeJobAdd, "Plan a job's instances across the servers and store it for the scheduler to place")
	registerCommand[JobRef, Job](TypeJobDelete, "Remove a job: its instances go, then the job")
	register[JobInstanceEvent](TypeJobPlaced, KindEvent, "The scheduler placed an instance of a job on a server")
	register[JobInstanceEvent](TypeJobRemoved, KindEvent, "The scheduler removed an instance of a job")
	registerCommand[JobUpgrade, Job](TypeJobUpgrade, "Start a rolling upgrade of a job")
	registerCommand[JobScale, JobPlan](TypeJobScale, "Change how many instances of a job run: the leader places or removes the difference")
	register[JobChange](TypeJobChanged, KindEvent, "A job was added, scaled, marked for removal or removed")
	register[RolloutEvent](TypeJobRollout, KindEvent, "A step of a job's rolling upgrade")
	registerCommand[ImageAsk, ImageAnswer](TypeImageAsk, "Ask a server whether it has an image (a query)")
	registerState[Job](TypeJob, "skein_jobs", 0, "A job's desired state, kept in the jobs bucket")
	registerState[SchedulerLeader](TypeSchedulerLeader, "skein_leader", SchedulerLease, "The scheduler that leads, kept while it renews its lease")
}

// JobAdd describes a job: COUNT instances of an image across the servers.
type JobAdd struct {
	// Name is the job's name; its instances are NAME-1, NAME-2, ...
	Name string `json:"name" valid:"name" jsonschema:"maxLength=48"`
	// Image is the image alias the instances run.
	Image string `json:"image" jsonschema:"minLength=1" valid:"image"`
	// Count is how many instances run.
	Count int `json:"count" jsonschema:"minimum=1,maximum=10000"`
	// Network, when set, places the instances only on servers whose container network it is.
	Network string `json:"network,omitempty" valid:"name"`
	// Replicas is the most instances one server runs (0: no limit).
	Replicas int `json:"replicas,omitempty" jsonschema:"minimum=0,maximum=10000"`
	// Group keeps the instances of every job of the group on one server.
	Group string `json:"group,omitempty" valid:"name"`
	// Strategy is spread (the default) or binpack.
	Strategy string `json:"strategy,omitempty" jsonschema:"enum=spread,enum=binpack"`
	// CPU is what each instance asks for, in millicores.
	CPU int64 `json:"cpu" jsonschema:"minimum=0,maximum=1000000"`
	// Mem is what each instance asks for, in bytes.
	Mem int64 `json:"mem" jsonschema:"minimum=0"`
	// Service publishes the instances in discovery under this name.
	Service string `json:"service,omitempty" valid:"service"`
	// Port is the instances' service port, checked over TCP.
	Port int `json:"port,omitempty" jsonschema:"minimum=0,maximum=65535"`
	// LB is a load balancer whose backends the scheduler keeps equal to the
	// job's healthy instances (on Port).
	LB string `json:"lb,omitempty" valid:"name"`
	// Plan only plans: nothing is stored or placed.
	Plan bool `json:"plan,omitempty"`
}

// JobRef names a job.
type JobRef struct {
	// Name is the job.
	Name string `json:"name" valid:"name"`
}

// JobScale sets how many instances of a job run.
type JobScale struct {
	// Name is the job.
	Name string `json:"name" valid:"name"`
	// Count is how many instances run from now on.
	Count int `json:"count" jsonschema:"minimum=1,maximum=10000"`
}

// JobChange says what changed in a job.
type JobChange struct {
	// Job is the job.
	Job string `json:"job" valid:"name"`
	// Change is added, scaled, deleting (its instances are being removed) or deleted.
	Change string `json:"change" jsonschema:"enum=added,enum=scaled,enum=deleting,enum=deleted"`
	// Count is how many instances it runs from now on.
	Count int `json:"count"`
	// Version is its version.
	Version int `json:"version"`
}

// JobPlan is a job and where its new instances go.
type JobPlan struct {
	// Job is the job as stored (or as it would be, for a plan).
	Job Job `json:"job"`
	// Place is how many new instances go on each server.
	Place map[string]int `json:"place"`
}

// Job is a job's desired state: the scheduler keeps what runs equal to it.
type Job struct {
	JobAdd
	// Version counts the job's changes; its instances carry the version they run.
	Version int `json:"version"`
	// Deleting says the job is being removed.
	Deleting bool `json:"deleting,omitempty"`
	// Rollout is the job's last rolling upgrade.
	Rollout *Rollout `json:"rollout,omitempty"`
	// Created is when the job was added.
	Created time.Time `json:"created"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// JobUpgrade starts a rolling upgrade: each new instance must pass its checks
// for MinHealthy seconds before an old one leaves the load balancer and stops.
type JobUpgrade struct {
	// Name is the job.
	Name string `json:"name" valid:"name"`
	// Image is the new image; empty runs the same image again (a redeploy).
	Image string `json:"image,omitempty" valid:"image"`
	// MinHealthy is how long, in seconds, a new instance must be healthy.
	MinHealthy int `json:"min_healthy" jsonschema:"minimum=0,maximum=3600"`
	// MaxParallel is how many new instances start at once.
	MaxParallel int `json:"max_parallel" jsonschema:"minimum=1,maximum=100"`
	// Deadline is how long, in seconds, a new instance has to become healthy
	// before the rollout stops and reverts.
	Deadline int `json:"deadline" jsonschema:"minimum=1,maximum=3600"`
}

// Rollout is a job's rolling upgrade.
type Rollout struct {
	// From is the version being replaced, FromImage its image.
	From      int    `json:"from"`
	FromImage string `json:"from_image"`
	// To is the version rolled out.
	To int `json:"to"`
	// MinHealthy, MaxParallel and Deadline are as asked (seconds).
	MinHealthy  int `json:"min_healthy"`
	MaxParallel int `json:"max_parallel"`
	Deadline    int `json:"deadline"`
	// Status is running, reverting, done, reverted or failed.
	Status string `json:"status" jsonschema:"enum=running,enum=reverting,enum=done,enum=reverted,enum=failed"`
	// Reason says why a rollout reverted or failed.
	Reason string `json:"reason,omitempty"`
	// Started and Ended bound it.
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
}

// RolloutEvent is a step of a rolling upgrade.
type RolloutEvent struct {
	// Job is the job.
	Job string `json:"job"`
	// Version is the version the step concerns.
	Version int `json:"version"`
	// Step is started, launched, healthy, retired, reverting, done, reverted or failed.
	Step string `json:"step" jsonschema:"enum=started,enum=launched,enum=healthy,enum=retired,enum=reverting,enum=done,enum=reverted,enum=failed"`
	// Instance and Server name the instance concerned, if any.
	Instance string `json:"instance,omitempty"`
	Server   string `json:"server,omitempty"`
	// Message says what happened.
	Message string `json:"message"`
}

// JobInstanceEvent says the scheduler placed or removed an instance of a job.
type JobInstanceEvent struct {
	// Job is the job.
	Job string `json:"job"`
	// Instance is the instance's container.
	Instance string `json:"instance"`
	// Server is where it runs or ran.
	Server string `json:"server"`
	// Cause says why: placed, replaced (its server was down), upgrade, excess, deleted, upgraded, failed.
	Cause string `json:"cause" jsonschema:"enum=placed,enum=replaced,enum=upgrade,enum=excess,enum=deleted,enum=upgraded,enum=failed"`
	// Error is why a placement failed.
	Error string `json:"error,omitempty"`
}

// SchedulerLeader is the scheduler that leads: it alone places and removes instances.
type SchedulerLeader struct {
	// ID is the scheduler's id (host and process).
	ID string `json:"id"`
	// Since is when it took the lead.
	Since time.Time `json:"since"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// ImageAsk asks a server whether it has an image.
type ImageAsk struct {
	// Image is the image alias.
	Image string `json:"image" jsonschema:"minLength=1" valid:"image"`
}

// ImageAnswer says whether the server has the image.
type ImageAnswer struct {
	// Exists is true when the image is there, or stored on the bus for the
	// server to fetch when a launch needs it.
	Exists bool `json:"exists"`
}
