package events

import "time"

// Statuses of a resource record.
const (
	// StatusCreating is a resource being set up: its name is reserved by Command.
	StatusCreating = "creating"
	// StatusReady is a resource that serves.
	StatusReady = "ready"
)

// Resource is what every record of a service container (an endpoint, a load
// balancer, ...) carries: who it is, where it runs, whether it is set up, which
// command made it and which configuration it runs.
type Resource struct {
	// Name is the resource (also its container's name).
	Name string `json:"name" valid:"name"`
	// Server is where it runs.
	Server string `json:"server"`
	// Status is creating or ready.
	Status string `json:"status" jsonschema:"enum=creating,enum=ready"`
	// Command is the id of the command that added it.
	Command string `json:"command,omitempty"`
	// Applied is the digest of the configuration files it runs, "" before the first.
	Applied string `json:"applied,omitempty"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
}

// Res returns the resource part of a record.
func (r *Resource) Res() *Resource { return r }

// Record is a record type that embeds Resource.
type Record interface {
	// Res returns the resource part of the record.
	Res() *Resource
}

// TypeJournal is a command's journal record.
const TypeJournal = "journal"

// Journal is what one command decided in its earlier attempts (a generated name,
// a container's boot before a restart), so that a redelivery decides the same.
type Journal struct {
	// Command is the command's id.
	Command string `json:"command"`
	// Steps are the decisions, by step name.
	Steps map[string]string `json:"steps"`
	// Updated is when it last changed.
	Updated time.Time `json:"updated"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// Sealed is a secret sealed to one agent's curve key (nkeys xkeys): only that
// agent's private key opens Box. Sender is the one-time key it was sealed with.
type Sealed struct {
	// Sender is the public curve key the secret was sealed with.
	Sender string `json:"sender,omitempty" valid:"xkey"`
	// Box is the sealed secret, base64.
	Box string `json:"box,omitempty" valid:"base64"`
}
