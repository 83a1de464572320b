package events

import "time"

// Discovery command types.
const (
	// TypeEndpointAdd runs a Consul server in a container on the addressed server.
	TypeEndpointAdd = "endpoint.add"
	// TypeEndpointDelete removes an endpoint.
	TypeEndpointDelete = "endpoint.delete"
	// TypeServiceAdd defines a service a container publishes.
	TypeServiceAdd = "service.add"
	// TypeServiceDelete removes service definitions of a container.
	TypeServiceDelete = "service.delete"
	// TypeCheckAdd defines a health check of a container.
	TypeCheckAdd = "check.add"
	// TypeCheckDelete removes a check of a container.
	TypeCheckDelete = "check.delete"
	// TypePublish publishes an ad-hoc service or check that belongs to no container.
	TypePublish = "adhoc.publish"
	// TypeUnpublish removes an ad-hoc entry, or only its checks.
	TypeUnpublish = "adhoc.unpublish"
)

// Discovery event and state types.
const (
	// TypeEndpointAdded says an endpoint serves.
	TypeEndpointAdded = "endpoint.added"
	// TypeEndpointDeleted says an endpoint is gone.
	TypeEndpointDeleted = "endpoint.deleted"
	// TypeServiceRegistered says a container's service was published at the endpoints.
	TypeServiceRegistered = "service.registered"
	// TypeServiceDeregistered says a container's service was removed from the endpoints.
	TypeServiceDeregistered = "service.deregistered"
	// TypeServiceDefined says a container's service and check definitions changed.
	TypeServiceDefined = "service.defined"
	// TypeHealth is a published container's health.
	TypeHealth = "health"
	// TypeCheckStatus says a check's status changed.
	TypeCheckStatus = "check.status"
	// TypeEndpoint is an endpoint record.
	TypeEndpoint = "endpoint"
	// TypeDefinitions is a container's service and check definitions.
	TypeDefinitions = "definitions"
	// TypeAdhoc is an ad-hoc entry.
	TypeAdhoc = "adhoc"
	// TypeConsulToken is a Consul ACL token record.
	TypeConsulToken = "consul.token"
	// TypeEndpointReseal asks for the management token sealed to another agent.
	TypeEndpointReseal = "endpoint.reseal"
	// TypeSealed is a sealed secret, as a query's output.
	TypeSealed = "sealed"
)

func init() {
	registerCommand[EndpointAdd, Endpoint](TypeEndpointAdd, "Run a Consul endpoint in a container on a server")
	registerCommand[EndpointRef, Endpoint](TypeEndpointDelete, "Remove a Consul endpoint")
	registerCommand[ServiceAdd, Definitions](TypeServiceAdd, "Define a service a container publishes")
	registerCommand[ServiceDelete, Definitions](TypeServiceDelete, "Remove service definitions of a container")
	registerCommand[CheckAdd, Definitions](TypeCheckAdd, "Define a health check of a container")
	registerCommand[CheckDelete, Definitions](TypeCheckDelete, "Remove a health check of a container")
	registerCommand[Publish, Adhoc](TypePublish, "Publish an ad-hoc service or check that belongs to no container")
	registerCommand[Unpublish, Adhoc](TypeUnpublish, "Remove an ad-hoc entry or its checks")
	register[EndpointEvent](TypeEndpointAdded, KindEvent, "An endpoint serves")
	register[EndpointEvent](TypeEndpointDeleted, KindEvent, "An endpoint is gone")
	register[Registration](TypeServiceRegistered, KindEvent, "A service was published at the endpoints")
	register[Registration](TypeServiceDeregistered, KindEvent, "A service was removed from the endpoints")
	register[Definitions](TypeServiceDefined, KindEvent, "A container's service and check definitions changed (all of them, as they are now; none when the container is gone)")
	register[CheckStatus](TypeCheckStatus, KindEvent, "A check's status changed")
	registerState[Endpoint](TypeEndpoint, "skein_endpoints", 0, "An endpoint, kept in the endpoints bucket")
	registerState[Definitions](TypeDefinitions, "skein_services", 0, "A container's services and checks, kept in the services bucket")
	registerState[Adhoc](TypeAdhoc, "skein_adhoc", 0, "An ad-hoc entry, kept in the ad-hoc bucket")
	registerState[Health](TypeHealth, "skein_health", 0, "A published container's health as its server's checks see it, kept in the health bucket")
	registerState[ConsulToken](TypeConsulToken, "skein_tokens", 0, "A Consul ACL token for one server, sealed to its agent, kept in the tokens bucket")
	registerCommand[EndpointReseal, Sealed](TypeEndpointReseal, "Seal the endpoints' management token to another agent (a query)")
	register[Sealed](TypeSealed, KindOutput, "A secret sealed to one agent's key")
}

// EndpointAdd asks for a Consul endpoint at a static address.
type EndpointAdd struct {
	// Name is the endpoint's name; "" picks consul-<last octet of IP>.
	Name string `json:"name,omitempty" valid:"name"`
	// IP is the endpoint's static address in the server's container subnet.
	IP string `json:"ip" valid:"ipv4"`
	// Management is the endpoints' ACL management token, sealed to the agent
	// of the addressed server: made by the CLI for the first endpoint, sealed
	// again by an endpoint's agent for the next ones (endpoint.reseal).
	Management *Sealed `json:"management,omitempty"`
}

// EndpointReseal asks the agent of an endpoint's server for the endpoints'
// management token sealed to another agent's key (a query: nothing is stored).
type EndpointReseal struct {
	// Name is the endpoint whose token is asked for.
	Name string `json:"name" valid:"name"`
	// To is the public curve key of the agent it is sealed to.
	To string `json:"to" valid:"xkey"`
}

// ConsulToken is a Consul ACL token an endpoint's agent made for one server,
// sealed to that server's agent: with it the agent may register and
// deregister its own server's nodes, and nothing else.
type ConsulToken struct {
	// For is the server whose agent uses the token.
	For string `json:"for"`
	// Holder is the server whose agent made it (the record's key starts with it).
	Holder string `json:"holder"`
	// Accessor is the token's public id.
	Accessor string `json:"accessor" valid:"uuid"`
	// To is the public curve key of the agent of For that Token is sealed to.
	To string `json:"to" valid:"xkey"`
	// Token is the token's secret, sealed to the agent of For.
	Token Sealed `json:"token"`
	// Updated is when it was made.
	Updated time.Time `json:"updated"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// EndpointRef names an endpoint.
type EndpointRef struct {
	// Name is the endpoint.
	Name string `json:"name" valid:"name"`
}

// Endpoint is a Consul endpoint as skein knows it.
type Endpoint struct {
	Resource
	// IP is its address: HTTP API and UI on :8500, DNS on :8600.
	IP string `json:"ip" valid:"ipv4"`
	// Management is the endpoints' ACL management token, sealed to the agent
	// of the endpoint's server: in clear nowhere but in the endpoint's container.
	Management *Sealed `json:"management,omitempty"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// ServiceAdd defines a service published by a container while it runs.
type ServiceAdd struct {
	// Container publishes the service.
	Container string `json:"container" valid:"name"`
	// Name is the service name, resolvable as NAME.service.consul.
	Name string `json:"name" valid:"service"`
	// Port is the service port.
	Port int `json:"port" jsonschema:"minimum=1,maximum=65535"`
	// Tags are Consul tags.
	Tags []string `json:"tags,omitempty" jsonschema:"maxItems=32" valid:"tag"`
}

// ServiceDelete removes one service definition, or all of a container's when Name is "".
type ServiceDelete struct {
	// Container is the container.
	Container string `json:"container" valid:"name"`
	// Name is the service, or "" for all.
	Name string `json:"name,omitempty" valid:"service"`
}

// CheckAdd defines a health check of a container.
type CheckAdd struct {
	// Container is the container checked.
	Container string `json:"container" valid:"name"`
	// Check is the check's definition.
	Check CheckDef `json:"check"`
}

// CheckDelete removes a check of a container.
type CheckDelete struct {
	// Container is the container.
	Container string `json:"container" valid:"name"`
	// Name is the check.
	Name string `json:"name" jsonschema:"minLength=1" valid:"ident"`
}

// ServiceDef is one service a container publishes.
type ServiceDef struct {
	// Name is the service name.
	Name string `json:"name"`
	// Port is the service port.
	Port int `json:"port"`
	// Tags are Consul tags.
	Tags []string `json:"tags,omitempty"`
}

// CheckDef is one health check: tcp to the container's port, or http to a URL.
type CheckDef struct {
	// Name is the check's name.
	Name string `json:"name" valid:"ident"`
	// Kind is tcp or http.
	Kind string `json:"kind" jsonschema:"enum=tcp,enum=http"`
	// Port is the tcp check's port on the container.
	Port int `json:"port,omitempty" jsonschema:"minimum=0,maximum=65535"`
	// Address is the tcp check's host when it is not the container (ad-hoc checks).
	Address string `json:"address,omitempty" valid:"ipv4"`
	// URL is the http check's URL; a host name that is not an address is asked of
	// the container itself: it is the Host header, and for https the TLS server
	// name the certificate must be valid for.
	URL string `json:"url,omitempty" valid:"checkurl"`
	// TLSSkipVerify makes an https check accept any certificate (Consul's
	// tls_skip_verify); by default the certificate is verified.
	TLSSkipVerify bool `json:"tls_skip_verify,omitempty"`
	// Interval is how often it runs, e.g. "10s".
	Interval string `json:"interval" valid:"duration"`
	// Timeout bounds one run, e.g. "2s".
	Timeout string `json:"timeout" valid:"duration"`
}

// Definitions are a container's services and checks, kept in skein's state.
type Definitions struct {
	// Container is the container.
	Container string `json:"container"`
	// Server is where the container runs.
	Server string `json:"server"`
	// Services are published while the container runs.
	Services []ServiceDef `json:"services"`
	// Checks gate the services' health.
	Checks []CheckDef `json:"checks"`
	// Updated is when they last changed.
	Updated time.Time `json:"updated"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// Registration says a container's service was published or removed.
type Registration struct {
	// Container publishes the service.
	Container string `json:"container"`
	// Service is the service name.
	Service string `json:"service"`
	// Address is the container's address.
	Address string `json:"address,omitempty"`
	// Port is the service port.
	Port int `json:"port"`
}

// Health is a published container's health as its server's checks see it.
type Health struct {
	// Container is the container.
	Container string `json:"container"`
	// Server runs it and its checks.
	Server string `json:"server"`
	// Passing says every check passes (a container without checks passes while it runs).
	Passing bool `json:"passing"`
	// Checks are the checks' statuses by name.
	Checks map[string]string `json:"checks,omitempty"`
	// Updated is when it last changed.
	Updated time.Time `json:"updated"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// CheckStatus says a check's status changed.
type CheckStatus struct {
	// Container is the container checked.
	Container string `json:"container"`
	// Check is the check's name.
	Check string `json:"check"`
	// Status is passing or critical.
	Status string `json:"status" jsonschema:"enum=passing,enum=critical"`
	// Output says why.
	Output string `json:"output,omitempty"`
}

// EndpointEvent says an endpoint was added or deleted.
type EndpointEvent struct {
	// Name is the endpoint.
	Name string `json:"name"`
	// IP is its address.
	IP string `json:"ip"`
	// Cause is "reconcile" when the agent repaired the record from what runs; empty for a command.
	Cause string `json:"cause,omitempty" jsonschema:"enum=reconcile"`
}

// Publish creates or extends an ad-hoc entry: a service at an address, or a check
// of it, that belongs to no container.
type Publish struct {
	// Name is the entry's name; a service is resolvable as NAME.service.consul.
	Name string `json:"name" valid:"service"`
	// IP is the entry's address (for a service).
	IP string `json:"ip,omitempty" valid:"ipv4"`
	// Port is the service's port; 0 for none.
	Port int `json:"port,omitempty" jsonschema:"minimum=0,maximum=65535"`
	// Check, when set, is added to the entry instead of a service.
	Check *CheckDef `json:"check,omitempty"`
}

// Unpublish removes an ad-hoc entry, or only its checks.
type Unpublish struct {
	// Name is the entry.
	Name string `json:"name" valid:"service"`
	// ChecksOnly keeps the service and removes the checks.
	ChecksOnly bool `json:"checks_only,omitempty"`
}

// Adhoc is an ad-hoc entry, kept in the ad-hoc bucket; its owner server publishes it and runs its checks.
type Adhoc struct {
	// Name is the entry.
	Name string `json:"name"`
	// Server owns it.
	Server string `json:"server"`
	// IP is its address.
	IP string `json:"ip"`
	// Port is its service port; 0 with Service false for a check-only entry.
	Port int `json:"port"`
	// Service says whether it publishes a service named Name.
	Service bool `json:"service"`
	// Checks gate its health.
	Checks []CheckDef `json:"checks"`
	// Updated is when it last changed.
	Updated time.Time `json:"updated"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}
