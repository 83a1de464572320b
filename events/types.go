package events

import (
	"encoding/json"
	"time"
)

// Command types: addressed to one server's agent.
const (
	// TypePing is a round trip to an agent.
	TypePing = "server.ping"
	// TypeLaunch creates and starts a container.
	TypeLaunch = "container.launch"
	// TypeStart starts a container.
	TypeStart = "container.start"
	// TypeStop stops a container.
	TypeStop = "container.stop"
	// TypeRestart restarts a container.
	TypeRestart = "container.restart"
	// TypeDelete deletes a container.
	TypeDelete = "container.delete"
	// TypePublishPort forwards a host port into a container.
	TypePublishPort = "container.publish"
	// TypeUnpublishPort removes a forwarded host port.
	TypeUnpublishPort = "container.unpublish"
)

// Other types.
const (
	// TypePong is the output of a ping.
	TypePong = "server.pong"
	// TypeResult answers a command.
	TypeResult = "result"
	// TypeProgress reports a step of a command.
	TypeProgress = "progress"
	// TypeServerUp says an agent came up.
	TypeServerUp = "server.up"
	// TypeServerDown says an agent stopped cleanly.
	TypeServerDown = "server.down"
	// TypeHeartbeat is an agent's heartbeat record.
	TypeHeartbeat = "server.heartbeat"
	// TypeContainer is a container record.
	TypeContainer = "container"
)

// Container event types, from Incus lifecycle events or skein's reconciliation.
const (
	// TypeContainerCreated says a container was created.
	TypeContainerCreated = "container.created"
	// TypeContainerStarted says a container started.
	TypeContainerStarted = "container.started"
	// TypeContainerStopped says a container stopped.
	TypeContainerStopped = "container.stopped"
	// TypeContainerRestarted says a container restarted.
	TypeContainerRestarted = "container.restarted"
	// TypeContainerDeleted says a container was deleted.
	TypeContainerDeleted = "container.deleted"
	// TypeContainerUpdated says a container's address or status changed.
	TypeContainerUpdated = "container.updated"
)

// ContainerEventTypes lists every container event type.
var ContainerEventTypes = []string{TypeContainerCreated, TypeContainerStarted, TypeContainerStopped, TypeContainerRestarted, TypeContainerDeleted, TypeContainerUpdated}

// Ping asks an agent to answer without touching any container.
type Ping struct {
	// Note is echoed back.
	Note string `json:"note,omitempty" jsonschema:"maxLength=256"`
}

// Pong is the answer to a ping.
type Pong struct {
	// Server is the agent's server name.
	Server string `json:"server"`
	// Note echoes the ping's note.
	Note string `json:"note,omitempty"`
	// Time is the agent's clock.
	Time time.Time `json:"time"`
}

// Launch creates a container from an image on the addressed server and starts it.
type Launch struct {
	// Name is the container name, unique across the cluster.
	Name string `json:"name" valid:"name"`
	// Image is the image alias on the server.
	Image string `json:"image" jsonschema:"minLength=1" valid:"image"`
	// IPv4 is an optional static address inside the server's container subnet.
	IPv4 string `json:"ipv4,omitempty" valid:"ipv4"`
	// Job makes the container an instance of that job (the scheduler's).
	Job string `json:"job,omitempty" valid:"name"`
	// JobVersion is the version of the job the instance runs.
	JobVersion int `json:"job_version,omitempty" jsonschema:"minimum=0"`
}

// ContainerAction addresses one container by name.
type ContainerAction struct {
	// Name is the container.
	Name string `json:"name" valid:"name"`
	// Force stops without waiting for a clean shutdown.
	Force bool `json:"force,omitempty"`
}

// PortForward forwards a host port of the container's server into the container.
type PortForward struct {
	// Name is the container.
	Name string `json:"name" valid:"name"`
	// Port is the container's port; 0 when removing.
	Port int `json:"port,omitempty" jsonschema:"minimum=0,maximum=65535"`
	// HostPort is the server's port.
	HostPort int `json:"host_port" jsonschema:"minimum=1,maximum=65535"`
}

// Container is a container as skein knows it.
type Container struct {
	// Name is the container name.
	Name string `json:"name"`
	// Server is the server it runs on.
	Server string `json:"server"`
	// Status is Incus's status: Running, Stopped, ... or Creating while skein launches it.
	Status string `json:"status"`
	// IPv4 is its global IPv4 address on eth0, if it has one.
	IPv4 string `json:"ipv4,omitempty"`
	// Image is the image alias it was launched from.
	Image string `json:"image,omitempty"`
	// Command is the id of the command that launched it.
	Command string `json:"command,omitempty"`
	// Job is the job it is an instance of, if any.
	Job string `json:"job,omitempty"`
	// JobVersion is the version of the job it runs.
	JobVersion int `json:"job_version,omitempty"`
	// Published are the host ports forwarded into it, "HOSTPORT->PORT".
	Published []string `json:"published,omitempty"`
	// Told is what the container's events last announced: an agent that
	// restarts announces what was not told yet, under the same event ids.
	Told *ContainerTold `json:"told,omitempty"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// ContainerTold is what a container's events last announced.
type ContainerTold struct {
	// Event is the last status event told: container.started or container.stopped.
	Event string `json:"event"`
	// IPv4 is the address last told.
	IPv4 string `json:"ipv4,omitempty"`
	// Seq counts the container's events; the next one's id derives from it.
	Seq int `json:"seq"`
	// Gen tells this container from an earlier one of the same name.
	Gen string `json:"gen,omitempty"`
}

// ErrorInfo is a failed command's error.
type ErrorInfo struct {
	// Code classifies the error: invalid, not_found, conflict, unavailable,
	// timeout (the handler's deadline passed) or internal.
	Code string `json:"code" jsonschema:"enum=invalid,enum=not_found,enum=conflict,enum=unavailable,enum=timeout,enum=internal"`
	// Message says what went wrong and how to fix it.
	Message string `json:"message"`
}

// Result answers one command; it is published on the command's result subject.
type Result struct {
	// Command is the id of the command answered.
	Command string `json:"command"`
	// CommandType is the type of the command answered.
	CommandType string `json:"command_type"`
	// OK is true when the command succeeded.
	OK bool `json:"ok"`
	// Error says why it failed.
	Error *ErrorInfo `json:"error,omitempty"`
	// Output is the command's output, typed by the command's spec.
	Output json.RawMessage `json:"output,omitempty"`
}

// Progress reports one step of a long command.
type Progress struct {
	// Command is the id of the command.
	Command string `json:"command"`
	// Step names the step.
	Step string `json:"step"`
	// Message says what is happening.
	Message string `json:"message,omitempty"`
}

// ContainerEvent says a container's lifecycle changed.
type ContainerEvent struct {
	// Name is the container.
	Name string `json:"name"`
	// Status is its status after the change.
	Status string `json:"status,omitempty"`
	// IPv4 is its address after the change, if known.
	IPv4 string `json:"ipv4,omitempty"`
	// Cause is "incus" for an Incus lifecycle event, "reconcile" when the agent found the change later.
	Cause string `json:"cause" jsonschema:"enum=incus,enum=reconcile"`
	// Action is the Incus lifecycle action, e.g. instance-started.
	Action string `json:"action,omitempty"`
}

// ServerEvent says an agent came up or went down.
type ServerEvent struct {
	// Name is the server.
	Name string `json:"name"`
}

// Signed is the signature of a record by its writer, which bus.Store makes
// and checks: readers take a server's records only from its agent (or the
// admin or the scheduler).
type Signed struct {
	// Signer is the JWT of the credentials that signed the record.
	Signer string `json:"signer,omitempty" jsonschema:"maxLength=8192"`
	// Sig is Signer's ed25519 signature (base64) of the record without
	// Signer and Sig, with its bucket and key.
	Sig string `json:"sig,omitempty" jsonschema:"maxLength=256"`
	// SignedAt is when it was signed, covered by the signature: a reader
	// takes the record only if the stream stored it about then, so that an
	// old copy stored again is not taken for the current one.
	SignedAt *time.Time `json:"signed_at,omitempty"`
}

// Signature returns the record's signer and signature.
func (s *Signed) Signature() (signer, sig string) { return s.Signer, s.Sig }

// SetSignature sets the record's signer and signature.
func (s *Signed) SetSignature(signer, sig string) { s.Signer, s.Sig = signer, sig }

// Signing returns when the record was signed (nil when it was not).
func (s *Signed) Signing() *time.Time { return s.SignedAt }

// SetSigning sets when the record was signed.
func (s *Signed) SetSigning(t *time.Time) { s.SignedAt = t }

// Heartbeat is an agent's liveness record in the servers bucket.
type Heartbeat struct {
	// Name is the server name.
	Name string `json:"name"`
	// Status is "up", or "down" after a clean stop.
	Status string `json:"status" jsonschema:"enum=up,enum=down"`
	// Address is the server's host address.
	Address string `json:"address,omitempty"`
	// Interfaces are the server's own IPv4 addresses (a floating IP must lie
	// in the network of one of them).
	Interfaces []HostInterface `json:"interfaces,omitempty" jsonschema:"maxItems=64"`
	// Subnet is the server's container subnet, e.g. 10.77.1.0/24.
	Subnet string `json:"subnet,omitempty"`
	// Gateway is the bridge's own address in the subnet.
	Gateway string `json:"gateway,omitempty"`
	// Network is the Incus bridge containers attach to.
	Network string `json:"network,omitempty"`
	// Project is the Incus project of the server's containers.
	Project string `json:"project,omitempty"`
	// CPUs is the number of CPUs.
	CPUs int `json:"cpus"`
	// Load1 is the one-minute load average.
	Load1 float64 `json:"load1"`
	// MemTotal is total memory in bytes.
	MemTotal uint64 `json:"mem_total"`
	// MemAvailable is available memory in bytes.
	MemAvailable uint64 `json:"mem_available"`
	// MemJobs is the memory the jobs' instances use, in bytes: the rest of
	// what is in use (other containers, the host's own) is not the jobs'
	// to ask for.
	MemJobs uint64 `json:"mem_jobs,omitempty"`
	// CPUOther is the CPU the server's containers that are no job's
	// instance use (databases, load balancers, web servers, containers
	// launched by hand), in millicores, averaged over about 15 s (Incus's
	// figures): the jobs' instances count for what they ask.
	CPUOther int64 `json:"cpu_other,omitempty" jsonschema:"minimum=0"`
	// Containers is how many containers the server has.
	Containers int `json:"containers"`
	// Version is the agent's version.
	Version string `json:"version,omitempty"`
	// Mesh is how this server reaches its peers' container subnets.
	Mesh *Mesh `json:"mesh,omitempty"`
	// SealKey is the agent's public curve key: secrets for this server are sealed to it.
	SealKey string `json:"seal_key,omitempty" valid:"xkey"`
	// Degraded says what the server lacks to run containers, each with its
	// fix (Incus, its network, pool, project, the service image); empty when
	// it has all it needs.
	Degraded []string `json:"degraded,omitempty"`
	// Time is when the heartbeat was sent.
	Time time.Time `json:"time"`
	// Signed is who wrote the heartbeat: its server's agent, on a bus that asks for credentials.
	Signed
}

// Mesh is how one server reaches the container subnets of its peers.
type Mesh struct {
	// Mode is routed, wireguard or off.
	Mode string `json:"mode" jsonschema:"enum=routed,enum=wireguard,enum=off"`
	// Problem says what keeps the mesh from working at all, with the fix.
	Problem string `json:"problem,omitempty" valid:"text"`
	// WGKey is the server's WireGuard public key (wireguard mode); its
	// private key never leaves the agent's state directory.
	WGKey string `json:"wg_key,omitempty" valid:"wgkey"`
	// WGEndpoint is where the server's WireGuard device listens, IP:PORT.
	WGEndpoint string `json:"wg_endpoint,omitempty" valid:"addrport"`
	// Peers are the other servers, by name.
	Peers []MeshPeer `json:"peers,omitempty" jsonschema:"maxItems=5000"`
}

// MeshPeer is the path from one server to one peer's container subnet.
type MeshPeer struct {
	// Name is the peer.
	Name string `json:"name" valid:"name"`
	// Subnet is the peer's container subnet.
	Subnet string `json:"subnet,omitempty"`
	// Via is the peer's address the route goes through: its host address
	// (routed) or its WireGuard endpoint as it announces it (wireguard).
	Via string `json:"via,omitempty"`
	// State is routed, tunnel (through the WireGuard device), same host,
	// waiting or refused.
	State string `json:"state" jsonschema:"enum=routed,enum=tunnel,enum=same host,enum=waiting,enum=refused"`
	// Problem says why the peer is refused, with the fix.
	Problem string `json:"problem,omitempty" valid:"text"`
	// Down says the peer's agent is down; its route is kept until it is removed.
	Down bool `json:"down,omitempty"`
	// Endpoint is where the WireGuard device last heard from the peer (it
	// differs from Via behind a NAT).
	Endpoint string `json:"endpoint,omitempty"`
	// Handshake is the last WireGuard handshake with the peer.
	Handshake *time.Time `json:"handshake,omitempty"`
	// RxBytes counts the bytes received from the peer through the tunnel.
	RxBytes int64 `json:"rx_bytes,omitempty" jsonschema:"minimum=0"`
	// TxBytes counts the bytes sent to the peer through the tunnel.
	TxBytes int64 `json:"tx_bytes,omitempty" jsonschema:"minimum=0"`
}

// TypeMeshProbe measures the paths from one server's containers to its
// peers' (a query).
const TypeMeshProbe = "mesh.probe"

// TypeMeshProbed is the answer to a mesh probe.
const TypeMeshProbed = "mesh.probed"

func init() {
	registerCommand[MeshProbe, MeshProbed](TypeMeshProbe, "Measure reachability and round trips from a server's container to its peers' containers (a query)")
	register[MeshProbed](TypeMeshProbed, KindOutput, "What a mesh probe measured")
}

// MeshProbe asks a server to ping each target from one of its containers.
type MeshProbe struct {
	// Targets are the peers' containers.
	Targets []ProbeTarget `json:"targets" jsonschema:"maxItems=1000"`
}

// ProbeTarget is one peer's container to ping.
type ProbeTarget struct {
	// Peer is the peer server.
	Peer string `json:"peer" valid:"name"`
	// Container is the container pinged.
	Container string `json:"container" valid:"name"`
	// Addr is its address.
	Addr string `json:"addr" valid:"ipv4"`
}

// MeshProbed is what a probe measured from one server.
type MeshProbed struct {
	// From is the container the pings were sent from, "" when the server has none running.
	From string `json:"from,omitempty"`
	// Results are the targets' figures, in the order asked.
	Results []ProbeResult `json:"results"`
}

// ProbeResult is the round trips to one target.
type ProbeResult struct {
	ProbeTarget
	// Sent and Received count the echo requests and replies.
	Sent     int `json:"sent"`
	Received int `json:"received"`
	// RTTMillis is the average round trip of the replies, in milliseconds.
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// Error says why the target was not measured.
	Error string `json:"error,omitempty" valid:"text"`
}
