package events

import (
	"reflect"
	"sort"
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

// Lookup returns the spec of a message type.
func Lookup(typ string) (Spec, bool) {
	s, ok := registry[typ]
	return s, ok
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

// The message types. Every one has a schema in schemas/.
func init() {
	registerCommand[Ping, Pong](TypePing, "Round trip to an agent that touches no container")
	registerCommand[Launch, Container](TypeLaunch, "Create and start a container on a server")
	registerCommand[ContainerAction, Container](TypeStart, "Start a container")
	registerCommand[ContainerAction, Container](TypeStop, "Stop a container")
	registerCommand[ContainerAction, Container](TypeRestart, "Restart a container")
	registerCommand[ContainerAction, Container](TypeDelete, "Delete a container")
	registerCommand[PortForward, Container](TypePublishPort, "Forward a host port into a container")
	registerCommand[PortForward, Container](TypeUnpublishPort, "Remove a forwarded host port")
	registerCommand[EndpointAdd, Endpoint](TypeEndpointAdd, "Run a Consul endpoint in a container on a server")
	registerCommand[EndpointRef, Endpoint](TypeEndpointDelete, "Remove a Consul endpoint")
	registerCommand[ServiceAdd, Definitions](TypeServiceAdd, "Define a service a container publishes")
	registerCommand[ServiceDelete, Definitions](TypeServiceDelete, "Remove service definitions of a container")
	registerCommand[CheckAdd, Definitions](TypeCheckAdd, "Define a health check of a container")
	registerCommand[CheckDelete, Definitions](TypeCheckDelete, "Remove a health check of a container")
	registerCommand[Publish, Adhoc](TypePublish, "Publish an ad-hoc service or check that belongs to no container")
	registerCommand[Unpublish, Adhoc](TypeUnpublish, "Remove an ad-hoc entry or its checks")
	register[Adhoc](TypeAdhoc, KindState, "An ad-hoc entry, kept in the ad-hoc bucket")
	registerCommand[LBAdd, LB](TypeLBAdd, "Run a load balancer in a container on a server")
	registerCommand[LBRef, LB](TypeLBDelete, "Remove a load balancer")
	registerCommand[LBBackends, LB](TypeLBBackendsAdd, "Add backends to a load balancer")
	registerCommand[LBBackendNames, LB](TypeLBBackendsDelete, "Remove backends from a load balancer")
	registerCommand[LBSet, LB](TypeLBSet, "Change a setting of a load balancer")
	register[LBChange](TypeLBChanged, KindEvent, "A load balancer's configuration changed")
	register[LB](TypeLB, KindState, "A load balancer, kept in the load balancers bucket")
	register[EndpointEvent](TypeEndpointAdded, KindEvent, "An endpoint serves")
	register[EndpointEvent](TypeEndpointDeleted, KindEvent, "An endpoint is gone")
	register[Registration](TypeServiceRegistered, KindEvent, "A service was published at the endpoints")
	register[Registration](TypeServiceDeregistered, KindEvent, "A service was removed from the endpoints")
	register[CheckStatus](TypeCheckStatus, KindEvent, "A check's status changed")
	register[Endpoint](TypeEndpoint, KindState, "An endpoint, kept in the endpoints bucket")
	register[Definitions](TypeDefinitions, KindState, "A container's services and checks, kept in the services bucket")
	register[Pong](TypePong, KindOutput, "An agent's answer to a ping")
	register[Result](TypeResult, KindResult, "The answer to one command")
	register[Progress](TypeProgress, KindProgress, "A step of a long command")
	for _, t := range ContainerEventTypes {
		register[ContainerEvent](t, KindEvent, "A container's lifecycle changed")
	}
	register[ServerEvent](TypeServerUp, KindEvent, "An agent came up")
	register[ServerEvent](TypeServerDown, KindEvent, "An agent went down cleanly")
	register[Heartbeat](TypeHeartbeat, KindState, "An agent's liveness and capacity, kept in the servers bucket")
	register[Container](TypeContainer, KindState, "A container as skein knows it, kept in the containers bucket")
}
