package events

import (
	"reflect"
	"sort"
	"time"
)

// Kind says what role a message type plays on the bus.
type Kind string

// The kinds of message.
const (
	// KindCommand asks one server's agent to do something.
	KindCommand Kind = "command"
	// KindResult answers one command.
	KindResult Kind = "result"
	// KindProgress reports on long work of one command.
	KindProgress Kind = "progress"
	// KindEvent tells anyone listening that state changed.
	KindEvent Kind = "event"
	// KindState is a value kept in a KV bucket.
	KindState Kind = "state"
	// KindOutput is only ever the output inside a result.
	KindOutput Kind = "output"
)

// Spec describes one message type: its name, schema version, kind and Go type.
type Spec struct {
	// Type is the message type, e.g. "container.launch".
	Type string
	// Version is the schema version.
	Version int
	// Kind is the role of the type.
	Kind Kind
	// Doc is the schema title.
	Doc string
	// Go is the payload's Go type.
	Go reflect.Type
	// Output is the type carried in a successful result's output, for commands.
	Output reflect.Type
	// Bucket is the KV bucket that keeps records of a state type, keyed by name.
	Bucket string
	// TTL is how long a record of the bucket lives without being written; 0 is for ever.
	TTL time.Duration
}

// SchemaName is the schema file name of the spec, "<type>.v<version>.json".
func (s Spec) SchemaName() string { return schemaName(s.Type, s.Version) }

var registry = map[string]Spec{}

func register[T any](typ string, kind Kind, doc string) {
	registry[typ] = Spec{Type: typ, Version: 1, Kind: kind, Doc: doc, Go: reflect.TypeFor[T]()}
}

func registerCommand[T, Out any](typ, doc string) {
	registry[typ] = Spec{Type: typ, Version: 1, Kind: KindCommand, Doc: doc, Go: reflect.TypeFor[T](), Output: reflect.TypeFor[Out]()}
}

// registerState registers a record type and the bucket that keeps its records:
// declaring the type is all it takes for `skein server` to create the bucket.
func registerState[T any](typ, bucket string, ttl time.Duration, doc string) {
	registry[typ] = Spec{Type: typ, Version: 1, Kind: KindState, Doc: doc, Go: reflect.TypeFor[T](), Bucket: bucket, TTL: ttl}
}

// Lookup returns the spec of a message type.
func Lookup(typ string) (Spec, bool) {
	s, ok := registry[typ]
	return s, ok
}

// StateOf returns the spec of the record type T, which names its bucket.
func StateOf[T any]() (Spec, bool) {
	t := reflect.TypeFor[T]()
	for _, s := range registry {
		if s.Kind == KindState && s.Go == t && s.Bucket != "" {
			return s, true
		}
	}
	return Spec{}, false
}

// Specs returns every registered spec, sorted by type.
func Specs() []Spec {
	out := make([]Spec, 0, len(registry))
	for _, s := range registry {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// The foundation's message types; each capability registers its own in its file.
// Every one has a schema in schemas/.
func init() {
	registerCommand[Ping, Pong](TypePing, "Round trip to an agent that touches no container")
	registerCommand[Launch, Container](TypeLaunch, "Create and start a container on a server")
	registerCommand[ContainerAction, Container](TypeStart, "Start a container")
	registerCommand[ContainerAction, Container](TypeStop, "Stop a container")
	registerCommand[ContainerAction, Container](TypeRestart, "Restart a container")
	registerCommand[ContainerAction, Container](TypeDelete, "Delete a container")
	registerCommand[PortForward, Container](TypePublishPort, "Forward a host port into a container")
	registerCommand[PortForward, Container](TypeUnpublishPort, "Remove a forwarded host port")
	register[Pong](TypePong, KindOutput, "An agent's answer to a ping")
	register[Result](TypeResult, KindResult, "The answer to one command")
	register[Progress](TypeProgress, KindProgress, "A step of a long command")
	for _, t := range ContainerEventTypes {
		register[ContainerEvent](t, KindEvent, "A container's lifecycle changed")
	}
	register[ServerEvent](TypeServerUp, KindEvent, "An agent came up")
	register[ServerEvent](TypeServerDown, KindEvent, "An agent went down cleanly")
	// A server that has not beaten for a day is forgotten.
	registerState[Heartbeat](TypeHeartbeat, "skein_servers", 24*time.Hour, "An agent's liveness and capacity, kept in the servers bucket")
	registerState[Container](TypeContainer, "skein_containers", 0, "A container as skein knows it, kept in the containers bucket")
	registerState[Journal](TypeJournal, "skein_journal", 24*time.Hour, "What a command decided in its earlier attempts, kept in the journal bucket")
}
