// Package container is the adapter between skein's workers and the container
// manager of one server (Incus). Workers see only the small Runtime interface;
// the Incus implementation and an in-memory fake for unit tests live here.
package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"
)

// ErrNotFound means no such container or image.
var ErrNotFound = errors.New("not found")

// Config keys skein keeps on the instances it creates.
const (
	// KeyImage records the image alias a container was launched from.
	KeyImage = "user.skein.image"
	// KeyCommand records the id of the command that launched it, for idempotent relaunch.
	KeyCommand = "user.skein.command"
	// KeyJob records the job a container is an instance of.
	KeyJob = "user.skein.job"
	// KeyJobVersion records the version of its job it runs.
	KeyJobVersion = "user.skein.job-version"
	// EnvIPv4 gives the container's init its address, ADDR/BITS, to set on
	// eth0 at boot (skein's images do; others take it from DHCP).
	EnvIPv4 = "environment.SKEIN_IPV4"
	// EnvGateway gives the container's init its default gateway.
	EnvGateway = "environment.SKEIN_GATEWAY"
)

// Instance is a container as the runtime reports it.
type Instance struct {
	// Name is the container name.
	Name string
	// Status is the runtime's status: Running, Stopped, ...
	Status string
	// IPv4 is the global IPv4 address of eth0, "" until it has one.
	IPv4 string
	// StaticIPv4 is the address requested at launch, if any.
	StaticIPv4 string
	// MAC is the hardware address of eth0, lower case ("" when unknown).
	MAC string
	// Image is the image alias it was launched from.
	Image string
	// Command is the id of the launching command.
	Command string
	// Job is the job it is an instance of, if any.
	Job string
	// JobVersion is the version of the job it runs.
	JobVersion int
	// Published are the host ports forwarded into it, "HOSTPORT->PORT".
	Published []string
	// Boot identifies the current run of a running container: it changes when
	// the container restarts ("" when stopped).
	Boot string
	// MemUsage is the memory it uses, in bytes (0 when stopped or unknown).
	MemUsage uint64
	// CPUUsage is the CPU time it has used since it started, in nanoseconds
	// (0 when stopped or unknown).
	CPUUsage uint64
}

// CreateSpec describes a container to create (stopped).
type CreateSpec struct {
	// Name is the container name.
	Name string
	// Image is the image alias.
	Image string
	// IPv4 is an optional static address.
	IPv4 string
	// Command is the id of the launching command.
	Command string
	// Job is the job it is an instance of, if any.
	Job string
	// JobVersion is the version of the job it runs.
	JobVersion int
}

// Subnet is a server's container network.
type Subnet struct {
	// Prefix is the subnet, e.g. 10.77.1.0/24.
	Prefix netip.Prefix
	// Gateway is the bridge's own address.
	Gateway netip.Addr
	// First and Last bound the network's DHCP range, where the addresses
	// skein picks come from (the rest is for --ip); zero means the whole subnet.
	First, Last netip.Addr
}

// Pool returns the first and last address skein may pick a container's
// address from: the DHCP range inside the subnet, else the whole subnet.
func (s Subnet) Pool() (netip.Addr, netip.Addr) {
	if s.First.IsValid() && s.Last.IsValid() && s.Prefix.Contains(s.First) && s.Prefix.Contains(s.Last) && !s.Last.Less(s.First) {
		return s.First, s.Last
	}
	p := s.Prefix.Masked()
	last := p.Addr()
	for i := 0; i < 32-p.Bits(); i++ {
		last = setBit(last, i)
	}
	return p.Addr(), last
}

func setBit(a netip.Addr, bit int) netip.Addr {
	b := a.As4()
	b[3-bit/8] |= 1 << (bit % 8)
	return netip.AddrFrom4(b)
}

// Contains reports whether ip is a usable container address in the subnet:
// inside it and neither the network, the broadcast nor the gateway address.
func (s Subnet) Contains(ip netip.Addr) bool {
	if !s.Prefix.Contains(ip) || ip == s.Gateway || ip == s.Prefix.Masked().Addr() {
		return false
	}
	bits := s.Prefix.Bits()
	if ip.Is4() && bits < 31 {
		b := ip.As4()
		host := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		if host|^(^uint32(0)<<(32-bits)) == host {
			return false
		}
	}
	return true
}

// Event is a lifecycle change reported by the runtime.
type Event struct {
	// Name is the container.
	Name string
	// Action is the runtime's action, e.g. instance-started.
	Action string
	// Time is when it happened.
	Time time.Time
}

// Runtime is what the container worker needs from a server's container manager.
type Runtime interface {
	// List returns every container of the server.
	List(ctx context.Context) ([]Instance, error)
	// Get returns one container or ErrNotFound.
	Get(ctx context.Context, name string) (*Instance, error)
	// Create creates a stopped container.
	Create(ctx context.Context, spec CreateSpec) error
	// Start starts a container.
	Start(ctx context.Context, name string) error
	// Readdress gives a stopped container another reserved address.
	Readdress(ctx context.Context, name, ip string) error
	// Stop stops a container, cleanly unless force.
	Stop(ctx context.Context, name string, force bool) error
	// Restart restarts a container.
	Restart(ctx context.Context, name string, force bool) error
	// Delete deletes a stopped container.
	Delete(ctx context.Context, name string) error
	// ImageExists reports whether an image alias is there.
	ImageExists(ctx context.Context, alias string) (bool, error)
	// Subnet returns the server's container subnet.
	Subnet(ctx context.Context) (Subnet, error)
	// Watch streams lifecycle events until ctx ends or the stream breaks (the channel closes).
	Watch(ctx context.Context) (<-chan Event, error)
	// Exec runs argv in a running container and returns its exit code and output.
	Exec(ctx context.Context, name string, argv ...string) (ExecResult, error)
	// PushFile writes a file into a container.
	PushFile(ctx context.Context, name, path string, data []byte, mode os.FileMode) error
	// PushFileFrom writes what r reads into a file of a container as it
	// reads it, never holding it whole; when r fails, so does the call, and
	// the file may hold part of it.
	PushFileFrom(ctx context.Context, name, path string, r io.Reader, mode os.FileMode) error
	// PullFile opens a file of a container for reading as it arrives, never
	// held whole, with its size (-1 when unknown); the caller closes it.
	PullFile(ctx context.Context, name, path string) (io.ReadCloser, int64, error)
	// Publish forwards a host port into a container's port (port 0 removes the forward).
	Publish(ctx context.Context, name string, hostPort, port int) error
	// ExposeSocket makes a unix socket of a container reachable at hostPath on the server.
	ExposeSocket(ctx context.Context, name, hostPath, containerPath string) error
	// ForwardDNS makes the server's container DNS send queries for domain to
	// servers (IP#PORT each); none stops forwarding it.
	ForwardDNS(ctx context.Context, domain string, servers []string) error
	// EnsureVolume makes sure the custom storage volume name exists in the
	// server's pool; created says it was made now (it is empty).
	EnsureVolume(ctx context.Context, name string) (created bool, err error)
	// AttachVolume mounts the custom volume at path in a container, running or not.
	AttachVolume(ctx context.Context, name, volume, path string) error
	// DeleteVolume deletes a custom volume that no container uses; a missing one is no error.
	DeleteVolume(ctx context.Context, name string) error
}

// Leases is what a Runtime may also offer: news of the DHCP leases its
// network grants, so that whoever waits for a container's address looks
// when the lease is granted rather than on a timer.
type Leases interface {
	// WatchLeases sends the hardware addresses (lower case) whose lease was
	// granted or renewed, as it happens, until ctx ends; the channel is
	// closed when it stops.
	WatchLeases(ctx context.Context) (<-chan []string, error)
}

// ExecResult is the outcome of a command run in a container.
type ExecResult struct {
	// Code is the exit status.
	Code int
	// Stdout is what it wrote to standard output.
	Stdout []byte
	// Stderr is what it wrote to standard error.
	Stderr []byte
}

// PublishDevice names the proxy device that forwards host port p.
func PublishDevice(hostPort int) string { return fmt.Sprintf("skein-pub-%d", hostPort) }

// PermanentError is a runtime refusal that a retry will not change (bad request, conflict).
type PermanentError struct {
	// Err is the runtime's error.
	Err error
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a refusal rather than a passing failure.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}
