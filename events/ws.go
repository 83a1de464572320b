package events

import "time"

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
	// TypeAppRenew renews an app's certificate now.
	TypeAppRenew = "app.renew"
	// TypeWS is a web server record.
	TypeWS = "ws"
)

func init() {
	registerCommand[WSAdd, WS](TypeWSAdd, "Run an nginx web server in a container on a server")
	registerCommand[WSRef, WS](TypeWSDelete, "Remove a web server")
	registerCommand[AppPublish, WS](TypeAppPublish, "Publish an app on a web server by URL")
	registerCommand[AppRef, WS](TypeAppDelete, "Remove an app from a web server")
	registerCommand[AppRef, WS](TypeAppRenew, "Renew an app's self-signed or ACME certificate now")
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
	// TargetContainer is a skein container by name, followed when its address changes.
	TargetContainer = "container"
)

// AppPublish publishes an app on a web server: requests for URL go to Target.
type AppPublish struct {
	// WS is the web server.
	WS string `json:"ws" valid:"name"`
	// URL is the host name the app answers for.
	URL string `json:"url" valid:"host"`
	// Target is where its requests go.
	Target Target `json:"target"`
	// TLS serves the app on 443 too; nil serves plain HTTP only.
	TLS *AppTLSRequest `json:"tls,omitempty"`
}

// TLS kinds: where an app's certificate comes from.
const (
	// TLSGiven is a certificate and key the user gave (-c/-k).
	TLSGiven = "given"
	// TLSSelf is a certificate signed by the web server's own CA (-s).
	TLSSelf = "self"
	// TLSACME is a certificate obtained from an ACME directory (--acme).
	TLSACME = "acme"
)

// DefaultACMEURL is the ACME directory used when none is given: Let's Encrypt's.
const DefaultACMEURL = "https://acme-v02.api.letsencrypt.org/directory"

// AppTLSRequest says how an app gets its certificate and serves HTTPS.
type AppTLSRequest struct {
	// Kind is given, self or acme.
	Kind string `json:"kind" jsonschema:"enum=given,enum=self,enum=acme"`
	// Pair is the given certificate and its key sealed to the agent (given only).
	Pair *TLSPair `json:"pair,omitempty"`
	// ACMEURL is the ACME directory (acme only).
	ACMEURL string `json:"acme_url,omitempty" valid:"httpsurl"`
	// ACMERoots are PEM CA certificates trusted for the directory's own TLS
	// besides the system's (a private or test directory).
	ACMERoots string `json:"acme_roots,omitempty" jsonschema:"maxLength=65536"`
	// NoRedirect keeps port 80 serving the app instead of redirecting to https.
	NoRedirect bool `json:"no_redirect,omitempty"`
	// HSTS adds the Strict-Transport-Security header.
	HSTS bool `json:"hsts,omitempty"`
}

// Target is where a web server sends an app's requests.
type Target struct {
	// Kind is address, consul or container.
	Kind string `json:"kind" jsonschema:"enum=address,enum=consul,enum=container"`
	// Host is an IPv4 address, a Consul name NAME.service.consul or a container's name.
	Host string `json:"host" valid:"targethost"`
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
	// CA is the PEM certificate of the web server's own CA, which signs its
	// self-signed apps' certificates (its key stays in the container).
	CA string `json:"ca,omitempty" jsonschema:"maxLength=8192"`
	// Resolvers are the DNS servers (IP:PORT) that resolve Consul-name targets.
	Resolvers []string `json:"resolvers,omitempty" valid:"addrport"`
	// Apps are the apps it publishes, by URL.
	Apps []App `json:"apps"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// App is one app a web server publishes.
type App struct {
	// URL is the host name it answers for.
	URL string `json:"url" valid:"host"`
	// Target is where its requests go.
	Target Target `json:"target"`
	// Addr is a container target's address as it is served now.
	Addr string `json:"addr,omitempty" valid:"ipv4"`
	// TLS is how it serves HTTPS; nil for plain HTTP.
	TLS *AppTLS `json:"tls,omitempty"`
}

// AppTLS is how an app serves HTTPS, as it runs: the certificate's identity,
// never its key.
type AppTLS struct {
	// Kind is given, self or acme.
	Kind string `json:"kind" jsonschema:"enum=given,enum=self,enum=acme"`
	// NoRedirect keeps port 80 serving the app instead of redirecting to https.
	NoRedirect bool `json:"no_redirect,omitempty"`
	// HSTS adds the Strict-Transport-Security header.
	HSTS bool `json:"hsts,omitempty"`
	// ACMEURL is the ACME directory its certificate comes from (acme only).
	ACMEURL string `json:"acme_url,omitempty" valid:"httpsurl"`
	// ACMERoots are the PEM roots trusted for that directory's TLS.
	ACMERoots string `json:"acme_roots,omitempty" jsonschema:"maxLength=65536"`
	// Fingerprint is the SHA-256 of the certificate served (hex); "" while an
	// ACME certificate is still being obtained.
	Fingerprint string `json:"fingerprint,omitempty" jsonschema:"pattern=^[0-9a-f]{64}$"`
	// NotAfter is when the certificate served expires.
	NotAfter time.Time `json:"not_after,omitzero"`
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
	// TLS is its certificate's kind, "" for plain HTTP (published only).
	TLS string `json:"tls,omitempty"`
	// Fingerprint is the SHA-256 of its certificate (published only).
	Fingerprint string `json:"fingerprint,omitempty"`
	// Renewed marks a certificate renewal.
	Renewed bool `json:"renewed,omitempty"`
}
