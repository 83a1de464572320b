package events

// Load balancer command, event and state types.
const (
	// TypeLBAdd runs a load balancer in a container on the addressed server.
	TypeLBAdd = "lb.add"
	// TypeLBDelete removes a load balancer.
	TypeLBDelete = "lb.delete"
	// TypeLBBackendsAdd adds backends to a load balancer.
	TypeLBBackendsAdd = "lb.backends.add"
	// TypeLBBackendsDelete removes backends from a load balancer.
	TypeLBBackendsDelete = "lb.backends.delete"
	// TypeLBSet changes a setting of a load balancer.
	TypeLBSet = "lb.set"
	// TypeLBChanged says a load balancer's configuration changed.
	TypeLBChanged = "lb.changed"
	// TypeLB is a load balancer record.
	TypeLB = "lb"
)

func init() {
	registerCommand[LBAdd, LB](TypeLBAdd, "Run a load balancer in a container on a server")
	registerCommand[LBRef, LB](TypeLBDelete, "Remove a load balancer")
	registerCommand[LBBackends, LB](TypeLBBackendsAdd, "Add backends to a load balancer")
	registerCommand[LBBackendNames, LB](TypeLBBackendsDelete, "Remove backends from a load balancer")
	registerCommand[LBSet, LB](TypeLBSet, "Change a setting of a load balancer")
	register[LBChange](TypeLBChanged, KindEvent, "A load balancer's configuration changed")
	registerState[LB](TypeLB, "skein_lbs", 0, "A load balancer, kept in the load balancers bucket")
}

// LBAdd asks for a load balancer.
type LBAdd struct {
	// Name is the load balancer's name; "" picks KIND-N.
	Name string `json:"name,omitempty" valid:"name"`
	// Kind is haproxy or nginx.
	Kind string `json:"kind" jsonschema:"enum=haproxy,enum=nginx"`
	// URL is the host name an nginx load balancer answers for.
	URL string `json:"url,omitempty" valid:"host"`
	// Backends are the first backends (nginx needs at least one).
	Backends []Backend `json:"backends,omitempty" jsonschema:"maxItems=256"`
	// TLS is a certificate and key to serve HTTPS with; never logged or stored in skein's state.
	TLS *TLSPair `json:"tls,omitempty"`
}

// TLSPair is a PEM certificate (chain) and its private key, sealed to the
// agent that installs it: the key is in clear nowhere on the bus.
type TLSPair struct {
	// Cert is the PEM certificate chain.
	Cert string `json:"cert" jsonschema:"minLength=1,maxLength=65536"`
	// Key is the PEM private key, sealed to the target server's agent.
	Key Sealed `json:"key"`
}

// LBRef names a load balancer.
type LBRef struct {
	// Name is the load balancer.
	Name string `json:"name" valid:"name"`
}

// Backend is one server behind a load balancer.
type Backend struct {
	// Name identifies the backend in the load balancer.
	Name string `json:"name" valid:"ident"`
	// Host is the backend's IPv4 address, or a Consul service name
	// (NAME.service.consul) that the load balancer resolves through the endpoints.
	Host string `json:"host" valid:"backendhost"`
	// Port is the backend's port.
	Port int `json:"port" jsonschema:"minimum=1,maximum=65535"`
}

// LBBackends adds backends.
type LBBackends struct {
	// LB is the load balancer.
	LB string `json:"lb" valid:"name"`
	// Backends are added; one with a name already there replaces it.
	Backends []Backend `json:"backends" jsonschema:"minItems=1,maxItems=256"`
}

// LBBackendNames removes backends by name.
type LBBackendNames struct {
	// LB is the load balancer.
	LB string `json:"lb" valid:"name"`
	// Names are the backends to remove.
	Names []string `json:"names" jsonschema:"minItems=1,maxItems=256" valid:"ident"`
}

// LBSet changes one setting of a load balancer.
type LBSet struct {
	// LB is the load balancer.
	LB string `json:"lb" valid:"name"`
	// Key is the setting: mode, url, ssl, workers, or resolvers (the DNS servers of
	// Consul-name backends, comma-separated IP:PORT).
	Key string `json:"key" jsonschema:"enum=mode,enum=url,enum=ssl,enum=workers,enum=resolvers"`
	// Value is the new value (unused for ssl).
	Value string `json:"value,omitempty" valid:"text"`
	// TLS is the certificate and key for ssl; never logged or stored in skein's state.
	TLS *TLSPair `json:"tls,omitempty"`
}

// LB is a load balancer as skein knows it; its configuration is rendered from this.
type LB struct {
	Resource
	// Kind is haproxy or nginx.
	Kind string `json:"kind"`
	// Mode is the balancing algorithm.
	Mode string `json:"mode"`
	// URL is the host name an nginx load balancer answers for.
	URL string `json:"url,omitempty" valid:"host"`
	// TLS says whether it serves HTTPS on 443 (the key stays in its container).
	TLS bool `json:"tls,omitempty"`
	// Resolvers are the DNS servers (IP:PORT) that resolve Consul-name backends.
	Resolvers []string `json:"resolvers,omitempty" valid:"addrport"`
	// Workers is the number of worker processes (nginx) or threads (haproxy); 0 is the default.
	Workers int `json:"workers,omitempty"`
	// Backends are the servers it balances over.
	Backends []Backend `json:"backends"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// LBChange says what changed in a load balancer.
type LBChange struct {
	// Name is the load balancer.
	Name string `json:"name"`
	// Change is added, backends, mode or deleted.
	Change string `json:"change"`
	// Backends is how many backends it has now.
	Backends int `json:"backends"`
	// Mode is its mode now.
	Mode string `json:"mode,omitempty"`
	// Added are the backends a backends change added or replaced, by name.
	Added []string `json:"added,omitempty"`
	// Removed are the backends a backends change removed, by name.
	Removed []string `json:"removed,omitempty"`
	// Cause is "reconcile" when the agent repaired the record from what runs
	// (its container was deleted behind skein's back) or what runs from the
	// record (haproxy ran other backends); empty for a command.
	Cause string `json:"cause,omitempty" jsonschema:"enum=reconcile"`
}
