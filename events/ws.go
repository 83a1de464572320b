package events

// Web server command, event and state types.
const (
	// TypeWSAdd runs an nginx web server in a container on the addressed server.
	TypeWSAdd = "ws.add"
	// TypeWSDelete removes a web server.
	TypeWSDelete = "ws.delete"
	// TypeAppPublish publishes an app on a web server by URL.
	TypeAppPublish = "app.publish"
	// TypeAppDelete removes one app from a web server.
	TypeAppDelete = "app.delete"
	// TypeWSChanged says a web server was added, changed or deleted.
	TypeWSChanged = "ws.changed"
	// TypeAppPublished says an app was published (or republished) on a web server.
	TypeAppPublished = "app.published"
	// TypeAppRemoved says an app was removed from a web server.
	TypeAppRemoved = "app.removed"
	// TypeWS is a web server record.
	TypeWS = "ws"
)

func init() {
	registerCommand[WSAdd, WS](TypeWSAdd, "Run an nginx web server in a container on a server")
	registerCommand[WSRef, WS](TypeWSDelete, "Remove a web server")
	registerCommand[AppPublish, WS](TypeAppPublish, "Publish an app on a web server by URL")
	registerCommand[AppRef, WS](TypeAppDelete, "Remove an app from a web server")
	register[WSChange](TypeWSChanged, KindEvent, "A web server was added, changed or deleted")
	register[AppEvent](TypeAppPublished, KindEvent, "An app was published on a web server")
	register[AppEvent](TypeAppRemoved, KindEvent, "An app was removed from a web server")
	registerState[WS](TypeWS, "skein_ws", 0, "A web server, kept in the web servers bucket")
}

// WSAdd asks for a web server.
type WSAdd struct {
	// Name is the web server's name; "" picks ws-N.
	Name string `json:"name,omitempty" valid:"name"`
}

// WSRef names a web server.
type WSRef struct {
	// Name is the web server.
	Name string `json:"name" valid:"name"`
}

// Target kinds: where a web server sends an app's requests.
const (
	// TargetAddress is a fixed IPv4 address and port.
	TargetAddress = "address"
	// TargetConsul is a Consul service name, resolved through the endpoints at request time.
	TargetConsul = "consul"
)

// AppPublish publishes an app on a web server: requests for URL go to Target.
type AppPublish struct {
	// WS is the web server.
	WS string `json:"ws" valid:"name"`
	// URL is the host name the app answers for.
	URL string `json:"url" valid:"host"`
	// Target is where its requests go.
	Target Target `json:"target"`
}

// Target is where a web server sends an app's requests.
type Target struct {
	// Kind is address or consul.
	Kind string `json:"kind" jsonschema:"enum=address,enum=consul"`
	// Host is an IPv4 address, or a Consul name NAME.service.consul.
	Host string `json:"host" valid:"backendhost"`
	// Port is the app's port.
	Port int `json:"port" jsonschema:"minimum=1,maximum=65535"`
}

// AppRef names an app on a web server.
type AppRef struct {
	// WS is the web server.
	WS string `json:"ws" valid:"name"`
	// URL is the app's host name.
	URL string `json:"url" valid:"host"`
}

// WS is a web server as skein knows it; its configuration is rendered from this.
type WS struct {
	Resource
	// Resolvers are the DNS servers (IP:PORT) that resolve Consul-name targets.
	Resolvers []string `json:"resolvers,omitempty" valid:"addrport"`
	// Apps are the apps it publishes, by URL.
	Apps []App `json:"apps"`
}

// App is one app a web server publishes.
type App struct {
	// URL is the host name it answers for.
	URL string `json:"url" valid:"host"`
	// Target is where its requests go.
	Target Target `json:"target"`
}

// WSChange says what changed in a web server.
type WSChange struct {
	// Name is the web server.
	Name string `json:"name"`
	// Change is added, apps or deleted.
	Change string `json:"change" jsonschema:"enum=added,enum=apps,enum=deleted"`
	// Apps is how many apps it publishes now.
	Apps int `json:"apps"`
	// Cause is "reconcile" when the agent repaired the record from what runs.
	Cause string `json:"cause,omitempty" jsonschema:"enum=reconcile"`
}

// AppEvent says an app was published on or removed from a web server.
type AppEvent struct {
	// WS is the web server.
	WS string `json:"ws"`
	// URL is the app's host name.
	URL string `json:"url"`
	// Target is where its requests go (published only).
	Target *Target `json:"target,omitempty"`
}
