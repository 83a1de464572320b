package incus

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event types accepted by GetEvents and found in Event.Type.
const (
	// EventTypeLifecycle reports changes to resources (instance-started, instance-deleted, ...).
	EventTypeLifecycle = "lifecycle"
	// EventTypeOperation reports every operation state change.
	EventTypeOperation = "operation"
	// EventTypeLogging relays daemon log lines.
	EventTypeLogging = "logging"
)

// Lifecycle actions skein reacts to (Incus defines many more).
const (
	// LifecycleInstanceCreated is sent when an instance's creation finishes.
	LifecycleInstanceCreated = "instance-created"
	// LifecycleInstanceStarted is sent when an instance has started.
	LifecycleInstanceStarted = "instance-started"
	// LifecycleInstanceStopped is sent when an instance stopped (by request or on its own).
	LifecycleInstanceStopped = "instance-stopped"
	// LifecycleInstanceShutdown is sent when an instance was asked to shut down cleanly.
	LifecycleInstanceShutdown = "instance-shutdown"
	// LifecycleInstanceRestarted is sent when an instance restarted.
	LifecycleInstanceRestarted = "instance-restarted"
	// LifecycleInstanceUpdated is sent when an instance's configuration changed.
	LifecycleInstanceUpdated = "instance-updated"
	// LifecycleInstanceDeleted is sent when an instance was deleted.
	LifecycleInstanceDeleted = "instance-deleted"
	// LifecycleInstanceExec is sent when a command is executed in an instance.
	LifecycleInstanceExec = "instance-exec"
	// LifecycleInstanceFilePushed is sent when a file was written into an instance.
	LifecycleInstanceFilePushed = "instance-file-pushed"
)

// Event is one message from the /1.0/events websocket.
type Event struct {
	// Type is one of the EventType* constants.
	Type string `json:"type"`
	// Timestamp is when the server emitted the event.
	Timestamp time.Time `json:"timestamp"`
	// Metadata is type specific: EventLifecycle, APIOperation or a log record.
	Metadata json.RawMessage `json:"metadata"`
	// Project is the project the event belongs to.
	Project string `json:"project,omitempty"`
	// Location is the cluster member that emitted it.
	Location string `json:"location,omitempty"`
}

// EventLifecycle is the Metadata of a lifecycle event.
type EventLifecycle struct {
	// Action is what happened, e.g. LifecycleInstanceStarted.
	Action string `json:"action"`
	// Source is the URL of the resource, e.g. "/1.0/instances/c1?project=p" (see InstanceNameFromSource).
	Source string `json:"source"`
	// Context carries action specific details (e.g. "command" for instance-exec).
	Context map[string]any `json:"context,omitempty"`
	// Requestor says who caused the event, when known.
	Requestor *EventLifecycleRequestor `json:"requestor,omitempty"`
	// Name is the resource name, on servers with the event_lifecycle_name_and_project extension.
	Name string `json:"name,omitempty"`
	// Project is the resource's project, on servers with the event_lifecycle_name_and_project extension.
	Project string `json:"project,omitempty"`
}

// EventLifecycleRequestor identifies who triggered a lifecycle event.
type EventLifecycleRequestor struct {
	// Username is the caller's name ("root" over the unix socket).
	Username string `json:"username"`
	// Protocol is how the caller connected ("unix", "tls", ...).
	Protocol string `json:"protocol"`
	// Address is the caller's address, when remote.
	Address string `json:"address"`
}

// Lifecycle decodes Metadata of a lifecycle event, failing for other types so misuse is caught.
func (e *Event) Lifecycle() (*EventLifecycle, error) {
	if e.Type != EventTypeLifecycle {
		return nil, fmt.Errorf("incus: event type %q is not %q", e.Type, EventTypeLifecycle)
	}
	var lc EventLifecycle
	if err := json.Unmarshal(e.Metadata, &lc); err != nil {
		return nil, fmt.Errorf("incus: decode lifecycle event: %w", err)
	}
	return &lc, nil
}

// Operation decodes Metadata of an operation event, failing for other types so misuse is caught.
func (e *Event) Operation() (*APIOperation, error) {
	if e.Type != EventTypeOperation {
		return nil, fmt.Errorf("incus: event type %q is not %q", e.Type, EventTypeOperation)
	}
	var op APIOperation
	if err := json.Unmarshal(e.Metadata, &op); err != nil {
		return nil, fmt.Errorf("incus: decode operation event: %w", err)
	}
	return &op, nil
}
