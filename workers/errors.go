package workers

import (
	"errors"
	"fmt"

	"github.com/skeinhq/skein/events"
)

// Error codes carried in results.
const (
	// CodeInvalid is bad input: fix the command.
	CodeInvalid = "invalid"
	// CodeNotFound is a missing container, image or server.
	CodeNotFound = "not_found"
	// CodeConflict is a clash with what exists, e.g. a duplicate name.
	CodeConflict = "conflict"
	// CodeUnavailable is a dependency that is down; it is retried.
	CodeUnavailable = "unavailable"
	// CodeTimeout is an attempt that passed its handler's deadline.
	CodeTimeout = "timeout"
	// CodeInternal is a bug or an unexpected failure.
	CodeInternal = "internal"
)

// Error is a handler failure with a code. Transient ones are retried with backoff;
// the others end the command with an error result at once.
type Error struct {
	// Code classifies the failure.
	Code string
	// Message says what went wrong and how to fix it.
	Message string
	// Transient asks for a retry.
	Transient bool
}

func (e *Error) Error() string { return e.Message }

// Invalid is a permanent error for bad input.
func Invalid(format string, args ...any) error {
	return &Error{Code: CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// NotFound is a permanent error for something missing.
func NotFound(format string, args ...any) error {
	return &Error{Code: CodeNotFound, Message: fmt.Sprintf(format, args...)}
}

// Conflict is a permanent error for a clash with existing state.
func Conflict(format string, args ...any) error {
	return &Error{Code: CodeConflict, Message: fmt.Sprintf(format, args...)}
}

// Transient is an error worth retrying: a dependency is busy or down.
func Transient(format string, args ...any) error {
	return &Error{Code: CodeUnavailable, Message: fmt.Sprintf(format, args...), Transient: true}
}

// Unready is a permanent error for a server that lacks what the command
// needs (its network, pool, project or an image); message names the fix.
func Unready(format string, args ...any) error {
	return &Error{Code: CodeUnavailable, Message: fmt.Sprintf(format, args...)}
}

// Internal is a permanent error for something that should not happen.
func Internal(format string, args ...any) error {
	return &Error{Code: CodeInternal, Message: fmt.Sprintf(format, args...)}
}

// IsTransient reports whether err is classed as worth a retry.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}

// Info converts an error into the result's error.
func Info(err error) *events.ErrorInfo {
	var e *Error
	if errors.As(err, &e) {
		return &events.ErrorInfo{Code: e.Code, Message: e.Message}
	}
	return &events.ErrorInfo{Code: CodeInternal, Message: err.Error()}
}

// FromStore classes an error from the store for the runtime: an edit's own
// *Error passes as it is, a record refused by its schema is a bug (internal),
// anything else (a conflict that outlasted the retries, a bus that does not
// answer) is worth a retry. what names the record in the message.
func FromStore(err error, what string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		return Internal("%s: %v", what, err)
	}
	return Transient("%s: %v", what, err)
}
