package incus

import "time"

// Operation classes found in APIOperation.Class.
const (
	// OperationClassTask is a plain background task.
	OperationClassTask = "task"
	// OperationClassWebsocket is an operation that expects websocket clients (interactive exec, console).
	OperationClassWebsocket = "websocket"
	// OperationClassToken is a token (join or certificate add).
	OperationClassToken = "token"
)

// APIOperation is the wire form of a background operation (api.Operation in the official client).
type APIOperation struct {
	// ID is the operation UUID used in /1.0/operations/<id>.
	ID string `json:"id"`
	// Class is one of the OperationClass* constants.
	Class string `json:"class"`
	// Description says what the operation does ("Creating instance", "Executing command", ...).
	Description string `json:"description"`
	// CreatedAt is when the operation was created.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when the operation last changed.
	UpdatedAt time.Time `json:"updated_at"`
	// Status is the human form of StatusCode.
	Status string `json:"status"`
	// StatusCode is Running/Pending while in progress and Success/Failure/Cancelled once final.
	StatusCode StatusCode `json:"status_code"`
	// Resources maps resource kind to the URLs it touches, e.g. {"instances": ["/1.0/instances/c1"]}.
	Resources map[string][]string `json:"resources"`
	// Metadata is operation specific (exec puts "return" and "output" here).
	Metadata map[string]any `json:"metadata"`
	// MayCancel reports whether DELETE /1.0/operations/<id> can cancel it.
	MayCancel bool `json:"may_cancel"`
	// Err is the failure message when StatusCode is Failure.
	Err string `json:"err"`
	// Location is the cluster member running the operation.
	Location string `json:"location"`
}
