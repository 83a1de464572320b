package incus

import (
	"encoding/json"
	"time"
)

// Instance types accepted in InstancesPost.Type.
const (
	// InstanceTypeContainer is a system container (the server default).
	InstanceTypeContainer = "container"
	// InstanceTypeVM is a virtual machine.
	InstanceTypeVM = "virtual-machine"
)

// InstancePut holds the writable fields of an instance, sent whole by PUT, so read-modify-write keeps unknown keys.
type InstancePut struct {
	// Architecture is the instance architecture; empty lets the server pick from the image.
	Architecture string `json:"architecture"`
	// Config holds instance options (limits.*, environment.*, user.*, ...).
	Config map[string]string `json:"config"`
	// Devices maps device name to its options, e.g. {"root": {"type": "disk", "path": "/", "pool": "p"}}.
	Devices map[string]map[string]string `json:"devices"`
	// Ephemeral instances are deleted when they stop.
	Ephemeral bool `json:"ephemeral"`
	// Profiles to apply in order; nil means ["default"], an empty non-nil slice means none.
	Profiles []string `json:"profiles"`
	// Restore names a snapshot to restore to (PUT only).
	Restore string `json:"restore,omitempty"`
	// Stateful reports whether saved runtime state exists on disk.
	Stateful bool `json:"stateful"`
	// Description is free text.
	Description string `json:"description"`
}

// InstancesPost is the body of POST /1.0/instances (create).
type InstancesPost struct {
	// InstancePut carries config, devices and profiles inline, as on the wire.
	InstancePut
	// Name of the new instance; must be unique within the project.
	Name string `json:"name"`
	// Source says where the root filesystem comes from (image, copy, none, ...).
	Source InstanceSource `json:"source"`
	// InstanceType is a cloud instance type (e.g. "t1.micro") translated into limits.
	InstanceType string `json:"instance_type,omitempty"`
	// Type is InstanceTypeContainer or InstanceTypeVM; empty means container.
	Type string `json:"type,omitempty"`
}

// InstanceSource describes what a new instance is created from.
type InstanceSource struct {
	// Type is "image", "copy", "migration" or "none".
	Type string `json:"type"`
	// Alias selects a local (or remote, with Server) image by alias.
	Alias string `json:"alias,omitempty"`
	// Fingerprint selects an image by (partial) fingerprint.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Properties selects an image by properties (os, release, ...).
	Properties map[string]string `json:"properties,omitempty"`
	// Server is a remote image server URL; empty means the local image store.
	Server string `json:"server,omitempty"`
	// Protocol is the remote server protocol ("simplestreams" or "incus").
	Protocol string `json:"protocol,omitempty"`
	// Source is the instance or snapshot to copy from (copy only).
	Source string `json:"source,omitempty"`
	// Project is the project of the source image or instance, when it differs.
	Project string `json:"project,omitempty"`
	// InstanceOnly skips snapshots when copying.
	InstanceOnly bool `json:"instance_only,omitempty"`
}

// Instance is GET /1.0/instances/<name>: the stored configuration plus its current status.
type Instance struct {
	// InstancePut carries the writable fields inline, as on the wire.
	InstancePut
	// Name is the instance name.
	Name string `json:"name"`
	// Type is "container" or "virtual-machine".
	Type string `json:"type"`
	// Status is the human form of StatusCode ("Running", "Stopped", ...).
	Status string `json:"status"`
	// StatusCode is the numeric status: Running (103), Stopped, Frozen or Error.
	StatusCode StatusCode `json:"status_code"`
	// CreatedAt is when the instance record was created.
	CreatedAt time.Time `json:"created_at"`
	// LastUsedAt is when the instance last started.
	LastUsedAt time.Time `json:"last_used_at"`
	// Location is the cluster member holding the instance ("none" when not clustered).
	Location string `json:"location"`
	// Project is the project the instance belongs to.
	Project string `json:"project"`
	// ExpandedConfig is Config merged with the profiles' config.
	ExpandedConfig map[string]string `json:"expanded_config,omitempty"`
	// ExpandedDevices is Devices merged with the profiles' devices.
	ExpandedDevices map[string]map[string]string `json:"expanded_devices,omitempty"`
}

// Writable returns the fields that UpdateInstance sends, for read-modify-write.
func (i *Instance) Writable() InstancePut {
	return i.InstancePut
}

// IsRunning reports whether the instance is up (neither stopped nor in error), as the official client's IsActive does.
func (i *Instance) IsRunning() bool {
	return i.StatusCode != Stopped && i.StatusCode != Error
}

// InstanceFull is one element of GET /1.0/instances?recursion=2: the instance with its state, so listing needs one request.
type InstanceFull struct {
	// Instance carries the instance fields inline, as on the wire.
	Instance
	// State is the runtime state (nil only if the server could not read it).
	State *InstanceState `json:"state"`
	// Snapshots are the instance snapshots, left undecoded because skein does not use them.
	Snapshots []json.RawMessage `json:"snapshots"`
	// Backups are the instance backups, left undecoded because skein does not use them.
	Backups []json.RawMessage `json:"backups"`
}
