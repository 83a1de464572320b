package events

import "time"

// Floating IP command, event and state types.
const (
	// TypeVIPAdd configures this server's side of a floating IP.
	TypeVIPAdd = "vip.add"
	// TypeVIPDelete removes this server's side of a floating IP.
	TypeVIPDelete = "vip.delete"
	// TypeVIPHolder says a server took or gave up a floating IP.
	TypeVIPHolder = "vip.holder"
	// TypeVIPCheck says a server's check for a floating IP started or stopped passing.
	TypeVIPCheck = "vip.check"
	// TypeVIP is one server's side of a floating IP.
	TypeVIP = "vip"
)

func init() {
	registerCommand[VIPAdd, VIP](TypeVIPAdd, "Configure this server's side of a floating IP (keepalived, VRRP v3 unicast)")
	registerCommand[VIPRef, VIP](TypeVIPDelete, "Remove this server's side of a floating IP")
	register[VIPHolderEvent](TypeVIPHolder, KindEvent, "A server took or gave up a floating IP")
	register[VIPCheckEvent](TypeVIPCheck, KindEvent, "A server's check for a floating IP started or stopped passing: while it fails the server gives the IP up")
	registerState[VIP](TypeVIP, "skein_vips", 0, "One server's side of a floating IP, kept in the floating IPs bucket")
}

// VIPAdd configures one server's side of a floating IP shared with a peer.
type VIPAdd struct {
	// Name is the floating IP's name, the same on both servers.
	Name string `json:"name" valid:"name"`
	// IP is the floating address.
	IP string `json:"ip" valid:"ipv4"`
	// Prefix is the length of the network it lies in.
	Prefix int `json:"prefix" jsonschema:"minimum=8,maximum=30"`
	// Interface is this server's interface in that network.
	Interface string `json:"interface" valid:"ifname"`
	// Self is this server's address on that interface (VRRP's source).
	Self string `json:"self" valid:"ipv4"`
	// Peer is the other server's address (VRRP is unicast to it).
	Peer string `json:"peer" valid:"ipv4"`
	// PeerServer is the other server's name.
	PeerServer string `json:"peer_server" valid:"name"`
	// RouterID is the VRRP router id, 1-255, the same on both servers.
	RouterID int `json:"router_id" jsonschema:"minimum=1,maximum=255"`
	// Preferred makes this server the one that holds the IP first.
	Preferred bool `json:"preferred,omitempty"`
	// Check is a program and its arguments the agent runs on the server every
	// second, without a shell: while it fails (exit status not 0, or over 2 s)
	// the server gives the IP up.
	Check []string `json:"check,omitempty" valid:"arg" jsonschema:"maxItems=32"`
	// CheckService names a service: while no instance of it on this server
	// passes all its checks, the server gives the IP up.
	CheckService string `json:"check_service,omitempty" valid:"service"`
}

// VIPRef names a floating IP.
type VIPRef struct {
	// Name is the floating IP.
	Name string `json:"name" valid:"name"`
}

// VIP is one server's side of a floating IP.
type VIP struct {
	VIPAdd
	// Server is this side's server.
	Server string `json:"server"`
	// Holder says whether this server holds the IP now.
	Holder bool `json:"holder"`
	// CheckState is passing or failing for a side with a check, else empty.
	CheckState string `json:"check_state,omitempty"`
	// Since is when it last took or gave up the IP.
	Since time.Time `json:"since,omitzero"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// VIPHolderEvent says a server took or gave up a floating IP.
type VIPHolderEvent struct {
	// Name is the floating IP.
	Name string `json:"name"`
	// IP is its address.
	IP string `json:"ip"`
	// Server is the server concerned.
	Server string `json:"server"`
	// Holder is true when it took the IP, false when it gave it up.
	Holder bool `json:"holder"`
	// Cause says why: keepalived, or cleanup when the agent removed an address a dead keepalived left.
	Cause string `json:"cause" jsonschema:"enum=keepalived,enum=cleanup"`
}

// VIPCheckEvent says a server's check for a floating IP changed its state.
type VIPCheckEvent struct {
	// Name is the floating IP.
	Name string `json:"name"`
	// Server is the server concerned.
	Server string `json:"server"`
	// State is passing or failing.
	State string `json:"state" jsonschema:"enum=passing,enum=failing"`
	// Output says what the check saw.
	Output string `json:"output"`
}

// HostInterface is one IPv4 address of a server's own interfaces.
type HostInterface struct {
	// Name is the interface, e.g. eth0.
	Name string `json:"name" valid:"ifname"`
	// Addr is its address with the network's length, e.g. 10.0.0.5/24.
	Addr string `json:"addr"`
}
