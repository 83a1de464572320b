package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream and bucket names.
const (
	// StreamCommands holds commands until an agent acknowledges them (work queue).
	StreamCommands = "SKEIN_COMMANDS"
	// StreamResults keeps the last result of each command for an hour, so a client
	// that missed the live message (a reconnect, a restart) can still read it.
	StreamResults = "SKEIN_RESULTS"
	// StreamEvents keeps events for external subscribers and `skein events`.
	StreamEvents = "SKEIN_EVENTS"
	// BucketServers holds each agent's heartbeat, keyed by server name.
	BucketServers = "skein_servers"
	// BucketContainers holds each container's record, keyed by container name.
	BucketContainers = "skein_containers"
	// BucketEndpoints holds each Consul endpoint's record, keyed by endpoint name.
	BucketEndpoints = "skein_endpoints"
	// BucketServices holds each container's service and check definitions, keyed by container name.
	BucketServices = "skein_services"
	// BucketAdhoc holds ad-hoc service and check entries, keyed by entry name.
	BucketAdhoc = "skein_adhoc"
	// BucketLBs holds each load balancer's record, keyed by name.
	BucketLBs = "skein_lbs"
)

// Tunables of the command consumers.
const (
	// AckWait is how long an agent may hold a command without reporting progress.
	AckWait = 10 * time.Second
	// MaxDeliver bounds the attempts at one command.
	MaxDeliver = 8
	// DedupWindow is how long a command id is remembered for deduplication.
	DedupWindow = 10 * time.Minute
)

// StreamConfigs returns the configuration of every skein stream, with replicas
// copies of each (1 on the embedded server, 3 on a three-node NATS cluster).
func StreamConfigs(replicas int) []jetstream.StreamConfig {
	return withReplicas(replicas, []jetstream.StreamConfig{
		{
			Name: StreamCommands, Subjects: []string{AllCommands()},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
			Duplicates: DedupWindow, MaxAge: 24 * time.Hour,
		},
		{
			Name: StreamResults, Subjects: []string{AllResults()},
			Storage: jetstream.FileStorage, Duplicates: DedupWindow, MaxAge: time.Hour,
			MaxMsgsPerSubject: 1, AllowDirect: true,
		},
		{
			Name: StreamEvents, Subjects: []string{AllEvents()},
			Storage: jetstream.FileStorage, MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30,
			AllowDirect: true,
		},
	})
}

func withReplicas(n int, cfgs []jetstream.StreamConfig) []jetstream.StreamConfig {
	for i := range cfgs {
		cfgs[i].Replicas = max(n, 1)
	}
	return cfgs
}

// BucketConfigs returns the configuration of every skein KV bucket.
func BucketConfigs(replicas int) []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		// A server that has not beaten for a day is forgotten.
		{Bucket: BucketServers, Description: "agent heartbeats", TTL: 24 * time.Hour, Storage: jetstream.FileStorage, Replicas: max(replicas, 1)},
		{Bucket: BucketContainers, Description: "container records", Storage: jetstream.FileStorage, History: 1, Replicas: max(replicas, 1)},
		{Bucket: BucketEndpoints, Description: "consul endpoints", Storage: jetstream.FileStorage, History: 1, Replicas: max(replicas, 1)},
		{Bucket: BucketServices, Description: "service and check definitions", Storage: jetstream.FileStorage, History: 1, Replicas: max(replicas, 1)},
		{Bucket: BucketAdhoc, Description: "ad-hoc service and check entries", Storage: jetstream.FileStorage, History: 1, Replicas: max(replicas, 1)},
		{Bucket: BucketLBs, Description: "load balancers", Storage: jetstream.FileStorage, History: 1, Replicas: max(replicas, 1)},
	}
}

// Ensure creates or updates every stream and bucket skein needs, with replicas
// copies each; safe to call again.
func Ensure(ctx context.Context, js jetstream.JetStream, replicas int) error {
	for _, cfg := range StreamConfigs(replicas) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range BucketConfigs(replicas) {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("bus: bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

// AgentConsumerName is the durable consumer of one server's commands.
func AgentConsumerName(server string) string { return "agent-" + server }

// EnsureAgentConsumer creates or updates the durable consumer of one server's commands.
func EnsureAgentConsumer(ctx context.Context, js jetstream.JetStream, server string) (jetstream.Consumer, error) {
	return js.CreateOrUpdateConsumer(ctx, StreamCommands, jetstream.ConsumerConfig{
		Durable:       AgentConsumerName(server),
		Description:   "commands for server " + server,
		FilterSubject: ServerCommands(server),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       AckWait,
		MaxDeliver:    MaxDeliver,
		MaxAckPending: 256,
	})
}

// WaitReady waits until every stream and bucket exists, for components that start
// before `skein server` has created them.
func WaitReady(ctx context.Context, js jetstream.JetStream) error {
	for {
		err := checkReady(ctx, js)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bus: skein streams not ready (run `skein server`, or `skein init` on an external NATS): %w", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func checkReady(ctx context.Context, js jetstream.JetStream) error {
	for _, cfg := range StreamConfigs(1) {
		if _, err := js.Stream(ctx, cfg.Name); err != nil {
			return err
		}
	}
	for _, cfg := range BucketConfigs(1) {
		if _, err := js.KeyValue(ctx, cfg.Bucket); err != nil {
			return err
		}
	}
	return nil
}

// IsNotFound reports whether err means a missing stream, consumer, key or message.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrMsgNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrBucketNotFound)
}
