package incus

// NetworkPut holds the writable fields of a network.
type NetworkPut struct {
	// Config holds network options, e.g. "ipv4.address": "10.0.0.1/24" (gateway address with prefix).
	Config map[string]string `json:"config"`
	// Description is free text.
	Description string `json:"description"`
}

// Network is GET /1.0/networks/<name>.
type Network struct {
	// NetworkPut carries config and description inline, as on the wire.
	NetworkPut
	// Name is the network name.
	Name string `json:"name"`
	// Type is "bridge", "macvlan", "ovn", "physical", ... ("loopback"/"physical" for unmanaged host interfaces).
	Type string `json:"type"`
	// UsedBy lists URLs of instances and profiles using the network.
	UsedBy []string `json:"used_by"`
	// Managed is true for networks Incus created (only those have Config).
	Managed bool `json:"managed"`
	// Status is "Created", "Pending", "Errored", "Unknown" or "Unavailable".
	Status string `json:"status"`
	// Locations lists cluster members where the network exists.
	Locations []string `json:"locations"`
	// Project is the project the network belongs to.
	Project string `json:"project"`
}
