package incus

// Server is GET /1.0: what the daemon is and what it supports, used to check we talk to a compatible Incus.
type Server struct {
	// Config is the server configuration (values are strings, but typed loosely as Incus does).
	Config map[string]any `json:"config"`
	// APIExtensions lists optional features the server implements.
	APIExtensions []string `json:"api_extensions"`
	// APIStatus is "stable", "devel" or "deprecated".
	APIStatus string `json:"api_status"`
	// APIVersion is the REST API version, "1.0".
	APIVersion string `json:"api_version"`
	// Auth is "trusted" or "untrusted"; over the unix socket it is "trusted".
	Auth string `json:"auth"`
	// Public is true when only public endpoints are served.
	Public bool `json:"public"`
	// AuthMethods lists supported remote authentication methods.
	AuthMethods []string `json:"auth_methods"`
	// AuthUserName identifies the caller as the server sees it.
	AuthUserName string `json:"auth_user_name"`
	// AuthUserMethod is how the caller authenticated ("unix" here).
	AuthUserMethod string `json:"auth_user_method"`
	// Environment is read-only information about the host and daemon.
	Environment ServerEnvironment `json:"environment"`
}

// ServerEnvironment is the read-only part of Server describing the host and daemon.
type ServerEnvironment struct {
	// Architectures are the instance architectures the host can run.
	Architectures []string `json:"architectures"`
	// Driver lists instance drivers, separated by " | " (e.g. "lxc | qemu").
	Driver string `json:"driver"`
	// DriverVersion lists driver versions in the same order as Driver.
	DriverVersion string `json:"driver_version"`
	// Firewall is the firewall driver in use (nftables or xtables).
	Firewall string `json:"firewall"`
	// Kernel is the OS kernel name.
	Kernel string `json:"kernel"`
	// KernelArchitecture is the host architecture.
	KernelArchitecture string `json:"kernel_architecture"`
	// KernelVersion is the running kernel release.
	KernelVersion string `json:"kernel_version"`
	// OSName is the host distribution name.
	OSName string `json:"os_name"`
	// OSVersion is the host distribution version.
	OSVersion string `json:"os_version"`
	// Project is the project the request was evaluated in.
	Project string `json:"project"`
	// Server is the implementation name, "incus".
	Server string `json:"server"`
	// ServerClustered is true when the daemon is a cluster member.
	ServerClustered bool `json:"server_clustered"`
	// ServerName is the host (or cluster member) name.
	ServerName string `json:"server_name"`
	// ServerPid is the daemon's process ID.
	ServerPid int `json:"server_pid"`
	// ServerVersion is the daemon release, e.g. "6.0.4".
	ServerVersion string `json:"server_version"`
	// Storage lists active storage drivers, separated by " | ".
	Storage string `json:"storage"`
	// StorageVersion lists storage driver versions in the same order.
	StorageVersion string `json:"storage_version"`
}
