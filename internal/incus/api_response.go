package incus

import "encoding/json"

// ResponseType tells a sync answer, a background operation and an error apart, because HTTP status alone is not reliable (operation waits answer 200 then may render an error).
type ResponseType string

// Response types that Incus puts in the envelope's "type" field.
const (
	// SyncResponse carries the result in Metadata.
	SyncResponse ResponseType = "sync"
	// AsyncResponse carries a background operation in Metadata.
	AsyncResponse ResponseType = "async"
	// ErrorResponse carries Error and ErrorCode.
	ErrorResponse ResponseType = "error"
)

// Response is the envelope every Incus JSON answer is wrapped in.
type Response struct {
	// Type says which of the other fields are meaningful.
	Type ResponseType `json:"type"`
	// Status is the human form of StatusCode (sync only).
	Status string `json:"status"`
	// StatusCode is 200 for sync and 100 for async answers.
	StatusCode int `json:"status_code"`
	// Operation is the operation URL (async only), e.g. "/1.0/operations/<uuid>".
	Operation string `json:"operation"`
	// ErrorCode is the HTTP-like code of an error answer (404, 409, 412, 500, ...).
	ErrorCode int `json:"error_code"`
	// Error is the server's error message.
	Error string `json:"error"`
	// Metadata is the payload: the resource (sync) or the operation (async).
	Metadata json.RawMessage `json:"metadata"`
}
