package incus

import "time"

// Actions for InstanceStatePut.Action.
const (
	// ActionStart starts a stopped instance.
	ActionStart = "start"
	// ActionStop stops a running instance (cleanly unless Force).
	ActionStop = "stop"
	// ActionRestart stops then starts the instance.
	ActionRestart = "restart"
	// ActionFreeze pauses all processes of the instance.
	ActionFreeze = "freeze"
	// ActionUnfreeze resumes a frozen instance.
	ActionUnfreeze = "unfreeze"
)

// InstanceStatePut is the body of PUT /1.0/instances/<name>/state (start, stop, ...).
type InstanceStatePut struct {
	// Action is one of the Action* constants.
	Action string `json:"action"`
	// Timeout is how long (seconds) a clean stop may take before failing; -1 waits forever.
	Timeout int `json:"timeout"`
	// Force kills instead of asking the instance to shut down (stop, restart).
	Force bool `json:"force"`
	// Stateful saves runtime state to disk on stop and restores it on start.
	Stateful bool `json:"stateful"`
}

// InstanceState is GET /1.0/instances/<name>/state: live runtime information.
type InstanceState struct {
	// Status is "Running", "Stopped", "Frozen" or "Error".
	Status string `json:"status"`
	// StatusCode is the numeric form of Status (Running is 103, not Started).
	StatusCode StatusCode `json:"status_code"`
	// Disk maps disk device name to its usage.
	Disk map[string]InstanceStateDisk `json:"disk"`
	// Memory is memory usage.
	Memory InstanceStateMemory `json:"memory"`
	// Network maps interface name (inside the instance) to its state and addresses.
	Network map[string]InstanceStateNetwork `json:"network"`
	// Pid is the host PID of the instance's init (0 when stopped).
	Pid int64 `json:"pid"`
	// Processes is the number of processes in the instance (-1 when unknown).
	Processes int64 `json:"processes"`
	// CPU is CPU usage.
	CPU InstanceStateCPU `json:"cpu"`
	// StartedAt is when the instance last started (zero when stopped).
	StartedAt time.Time `json:"started_at"`
}

// InstanceStateDisk is the usage of one disk device.
type InstanceStateDisk struct {
	// Usage is bytes used.
	Usage int64 `json:"usage"`
	// Total is the size limit in bytes (0 when unlimited).
	Total int64 `json:"total"`
}

// InstanceStateCPU is CPU usage.
type InstanceStateCPU struct {
	// Usage is CPU time consumed, in nanoseconds.
	Usage int64 `json:"usage"`
}

// InstanceStateMemory is memory usage.
type InstanceStateMemory struct {
	// Usage is bytes in use.
	Usage int64 `json:"usage"`
	// UsagePeak is the peak bytes in use.
	UsagePeak int64 `json:"usage_peak"`
	// Total is the memory limit in bytes.
	Total int64 `json:"total"`
	// SwapUsage is swap bytes in use.
	SwapUsage int64 `json:"swap_usage"`
	// SwapUsagePeak is the peak swap bytes in use.
	SwapUsagePeak int64 `json:"swap_usage_peak"`
}

// InstanceStateNetwork is the state of one network interface inside the instance.
type InstanceStateNetwork struct {
	// Addresses are the IP addresses on the interface.
	Addresses []InstanceStateNetworkAddress `json:"addresses"`
	// Counters are traffic counters.
	Counters InstanceStateNetworkCounters `json:"counters"`
	// Hwaddr is the MAC address.
	Hwaddr string `json:"hwaddr"`
	// HostName is the host-side interface name (veth).
	HostName string `json:"host_name"`
	// Mtu is the interface MTU.
	Mtu int `json:"mtu"`
	// State is "up" or "down".
	State string `json:"state"`
	// Type is the link type ("broadcast", "loopback", ...).
	Type string `json:"type"`
}

// InstanceStateNetworkAddress is one IP address on an interface.
type InstanceStateNetworkAddress struct {
	// Family is "inet" or "inet6".
	Family string `json:"family"`
	// Address is the IP address without prefix.
	Address string `json:"address"`
	// Netmask is the prefix length, as a string.
	Netmask string `json:"netmask"`
	// Scope is "global", "link" or "local".
	Scope string `json:"scope"`
}

// InstanceStateNetworkCounters are traffic counters of one interface.
type InstanceStateNetworkCounters struct {
	// BytesReceived counts received bytes.
	BytesReceived int64 `json:"bytes_received"`
	// BytesSent counts sent bytes.
	BytesSent int64 `json:"bytes_sent"`
	// PacketsReceived counts received packets.
	PacketsReceived int64 `json:"packets_received"`
	// PacketsSent counts sent packets.
	PacketsSent int64 `json:"packets_sent"`
}
