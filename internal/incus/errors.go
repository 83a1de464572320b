package incus

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// StatusError is an error answer from Incus, kept typed so callers can branch on the code.
type StatusError struct {
	// StatusCode is the error_code of the answer (or the HTTP status when the body was not an envelope).
	StatusCode int
	// Message is the server's error text.
	Message string
}

// Error formats the server message with its code so logs show both.
func (e *StatusError) Error() string {
	return fmt.Sprintf("incus: %s (status %d)", e.Message, e.StatusCode)
}

// HasStatus reports whether err wraps a StatusError with the given code.
func HasStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == code
}

// IsNotFound reports a 404, e.g. a missing instance, network, alias or a finished operation already forgotten.
func IsNotFound(err error) bool {
	return HasStatus(err, http.StatusNotFound)
}

// IsConflict reports a 409, which Incus uses for some duplicates (e.g. profiles, networks) and busy resources.
func IsConflict(err error) bool {
	return HasStatus(err, http.StatusConflict)
}

// IsPreconditionFailed reports a 412, which Incus returns when an If-Match ETag no longer matches.
func IsPreconditionFailed(err error) bool {
	return HasStatus(err, http.StatusPreconditionFailed)
}

// IsAlreadyExists reports a duplicate name: a 409 or "already exists" answer, or (Incus 6.0, duplicate instance) a create operation failing on the database's UNIQUE constraint.
func IsAlreadyExists(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.StatusCode == http.StatusConflict || strings.Contains(se.Message, "already exists")
	}
	var oe *OperationError
	if errors.As(err, &oe) {
		return strings.Contains(oe.Err, "already exists") || strings.Contains(oe.Err, "UNIQUE constraint failed")
	}
	return false
}

// OperationError is returned by Operation.Wait when the operation ended in Failure or Cancelled.
type OperationError struct {
	// ID is the operation UUID.
	ID string
	// Description is what the operation was doing.
	Description string
	// StatusCode is Failure or Cancelled.
	StatusCode StatusCode
	// Err is the server's failure message.
	Err string
}

// Error includes the description so the failing step is visible without the ID.
func (e *OperationError) Error() string {
	msg := e.Err
	if msg == "" {
		msg = fmt.Sprintf("ended with status %d", e.StatusCode)
	}
	return fmt.Sprintf("incus: operation %s (%s) failed: %s", e.ID, e.Description, msg)
}
