package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
)

// Stream and bucket names.
const (
	// StreamCommands holds commands until an agent acknowledges them (work queue).
	StreamCommands = "SKEIN_COMMANDS"
	// StreamResults keeps the last result of each command for ResultsKept, so a
	// client that missed the live message (a reconnect, a restart) can still read
	// it, and a command sent again with the same id is answered from it.
	StreamResults = "SKEIN_RESULTS"
	// StreamEvents keeps events for external subscribers and `skein events`.
	StreamEvents = "SKEIN_EVENTS"
)

// Tunables of the command consumers.
const (
	// AckWait is how long an agent may hold a command without reporting progress.
	AckWait = 10 * time.Second
	// MaxDeliver bounds the attempts at one command.
	MaxDeliver = 8
	// DedupWindow is how long JetStream itself drops a command id seen before;
	// after it, the agent still answers the id from its stored result.
	DedupWindow = 10 * time.Minute
	// ResultsKept is how long a command's result is kept, and so how long a
	// command id is answered without running again.
	ResultsKept = 24 * time.Hour
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
			Storage: jetstream.FileStorage, Duplicates: DedupWindow, MaxAge: ResultsKept,
			// A result's subject keeps ResultSlots messages and takes no more:
			// another agent can have messages stored there (a direct get's
			// reply goes anywhere), but none that pushes the result out.
			MaxMsgsPerSubject: ResultSlots, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true, AllowDirect: true,
			// Each result, once stored (and not a copy dropped as a duplicate),
			// to StoredResultSubject: where waiting clients take it.
			RePublish: &jetstream.RePublish{Source: Prefix + ".result.*.*", Destination: Prefix + ".stored.{{wildcard(1)}}.{{wildcard(2)}}"},
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

// BucketConfigs returns the configuration of every skein KV bucket: one per
// record type registered in events, so a new capability declares its own.
func BucketConfigs(replicas int) []jetstream.KeyValueConfig {
	var out []jetstream.KeyValueConfig
	for _, s := range events.Specs() {
		if s.Kind != events.KindState || s.Bucket == "" {
			continue
		}
		out = append(out, jetstream.KeyValueConfig{Bucket: s.Bucket, Description: s.Doc, TTL: s.TTL, History: 1, Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	}
	return out
}

// ImagesBucket is the object store of skein's images: each built image is
// stored once, under its alias, and agents whose server lacks it import it.
const ImagesBucket = "skein_images"

// ImagesStoreConfig configures the images object store.
func ImagesStoreConfig(replicas int) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{Bucket: ImagesBucket, Description: "skein's images, by alias: unified Incus image tarballs", Storage: jetstream.FileStorage, Replicas: max(replicas, 1)}
}

// BackupsPrefix starts the name of every server's backups object store.
const BackupsPrefix = "skein_backups_"

// BackupsBucket is the object store of one server's database backups: each
// agent writes its own server's only.
func BackupsBucket(server string) string { return BackupsPrefix + server }

// BackupsStoreConfig is nats.go's configuration of a server's backups
// object store, which takes rollups: what a client that makes the store
// itself would ask for. skein makes it with BackupsStreamConfig.
func BackupsStoreConfig(server string) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{Bucket: BackupsBucket(server), Description: "database backups of server " + server + ", gzip-compressed dumps", Storage: jetstream.FileStorage, Replicas: 1}
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
		if err := refuseRollups(ctx, js, "KV_"+cfg.Bucket); err != nil {
			return err
		}
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, ImagesStoreConfig(replicas)); err != nil {
		return fmt.Errorf("bus: object store %s: %w", ImagesBucket, err)
	}
	return nil
}

// refuseRollups has stream refuse messages with a Nats-Rollup header, which
// the KV API sets on every bucket: a rollup stored under an agent's own key
// deletes every other server's records, and a message that carries one,
// stored anywhere, can be had published onto any subject (a direct get's
// reply). skein never purges a key; it deletes with a marker.
func refuseRollups(ctx context.Context, js jetstream.JetStream, stream string) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("bus: stream %s: %w", stream, err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowRollup {
		return nil
	}
	cfg.AllowRollup = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("bus: stream %s refusing rollups: %w", stream, err)
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
	_, err := js.ObjectStore(ctx, ImagesBucket)
	return err
}

// IsNotFound reports whether err means a missing stream, consumer, key or message.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrMsgNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrBucketNotFound)
}

// StoredMsg is a message as a stream stored it.
type StoredMsg struct {
	// Subject is where it was published.
	Subject string
	// Data is its body.
	Data []byte
	// Header is what its publisher set.
	Header nats.Header
	// Seq is its sequence in the stream.
	Seq uint64
	// Time is when the stream stored it.
	Time time.Time
}

// LastMsg reads the last message of subject in stream from the stream's
// leader, nil when there is none. A direct get (what jetstream's
// GetLastMsgForSubject does on skein's streams) may be answered by a replica
// that lags behind: fine for showing, wrong for deciding whether a command
// was answered.
func LastMsg(ctx context.Context, nc *nats.Conn, stream, subject string) ([]byte, error) {
	m, err := LastStored(ctx, nc, stream, subject)
	if m == nil {
		return nil, err
	}
	return m.Data, nil
}

// LastStored is LastMsg with the message's headers and sequence; nil when
// the subject holds none.
func LastStored(ctx context.Context, nc *nats.Conn, stream, subject string) (*StoredMsg, error) {
	return getStored(ctx, nc, stream, subject, map[string]any{"last_by_subj": subject})
}

// NextStored reads the first message of subject in stream at or after
// sequence seq, from the stream's leader; nil when there is none.
func NextStored(ctx context.Context, nc *nats.Conn, stream, subject string, seq uint64) (*StoredMsg, error) {
	return getStored(ctx, nc, stream, subject, map[string]any{"seq": seq, "next_by_subj": subject})
}

// getStored asks stream's leader for one message of subject.
func getStored(ctx context.Context, nc *nats.Conn, stream, subject string, ask map[string]any) (*StoredMsg, error) {
	req, err := json.Marshal(ask)
	if err != nil {
		return nil, err
	}
	m, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", subject, stream, err)
	}
	var resp struct {
		Message *struct {
			Subject string    `json:"subject"`
			Data    []byte    `json:"data"`
			Header  []byte    `json:"hdrs"`
			Seq     uint64    `json:"seq"`
			Time    time.Time `json:"time"`
		} `json:"message"`
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", subject, stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == 10037: // no message found
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("reading %s from %s: %s", subject, stream, resp.Error.Description)
	case resp.Message == nil:
		return nil, fmt.Errorf("reading %s from %s: an empty answer", subject, stream)
	}
	out := &StoredMsg{Subject: resp.Message.Subject, Data: resp.Message.Data, Seq: resp.Message.Seq, Time: resp.Message.Time, Header: nats.Header{}}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return nil, fmt.Errorf("reading %s from %s: its headers: %w", subject, stream, err)
		}
		out.Header = h
	}
	return out, nil
}
