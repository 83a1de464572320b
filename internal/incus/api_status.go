package incus

// StatusCode is Incus's fixed numeric status, which clients should trust over the status string.
type StatusCode int

// Status codes shared by operations and instances (see the REST API "Status codes" table).
const (
	// OperationCreated is the code of a freshly queued operation.
	OperationCreated StatusCode = 100
	// Started is in the table but running instances actually report Running (103).
	Started StatusCode = 101
	// Stopped means an instance is stopped.
	Stopped StatusCode = 102
	// Running means an operation is in progress or an instance is running.
	Running StatusCode = 103
	// Cancelling means an operation is being cancelled.
	Cancelling StatusCode = 104
	// Pending means an operation has not started yet.
	Pending StatusCode = 105
	// Starting means an instance is starting.
	Starting StatusCode = 106
	// Stopping means an instance is stopping.
	Stopping StatusCode = 107
	// Aborting means an instance is aborting.
	Aborting StatusCode = 108
	// Freezing means an instance is freezing.
	Freezing StatusCode = 109
	// Frozen means an instance is frozen.
	Frozen StatusCode = 110
	// Thawed means an instance has been unfrozen.
	Thawed StatusCode = 111
	// Error means an instance is in an error state.
	Error StatusCode = 112
	// Ready means an instance reported itself ready.
	Ready StatusCode = 113
	// Success means an operation finished without error.
	Success StatusCode = 200
	// Failure means an operation finished with an error.
	Failure StatusCode = 400
	// Cancelled means an operation was cancelled.
	Cancelled StatusCode = 401
)

// IsFinal reports whether an operation with this code will not change any more, so waiting can stop.
func (s StatusCode) IsFinal() bool {
	return s >= Success
}
