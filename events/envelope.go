// Package events holds skein's wire types: the one envelope that carries every
// command, result, progress report and event, and the payloads inside it.
package events

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/skeinhq/skein/internal/validate"
)

// Envelope is the one shape on the bus for commands, results, progress and events.
type Envelope struct {
	// ID is unique per message; for a command it is also the deduplication key.
	ID string `json:"id" jsonschema:"minLength=1,maxLength=160,pattern=^[A-Za-z0-9_-]+$"`
	// Type names the payload, e.g. "container.launch" or "container.started".
	Type string `json:"type" jsonschema:"minLength=1,pattern=^[a-z][a-z0-9_.]*$"`
	// V is the schema version of the payload; the schema is schemas/<type>.v<V>.json.
	V int `json:"v" jsonschema:"minimum=1"`
	// Time is when the message was made.
	Time time.Time `json:"time"`
	// Source says who made it: "cli", "agent/s1", ...
	Source string `json:"source" jsonschema:"minLength=1"`
	// Server is the server a command is addressed to or an event is about.
	Server string `json:"server,omitempty"`
	// Data is the typed payload, validated against the schema of Type.
	Data json.RawMessage `json:"data"`
	// Fresh says that ID was made for this message and never sent before (the
	// client generated it), so no earlier result of it can exist. Not sent
	// in the envelope: the bus carries it as a header.
	Fresh bool `json:"-"`
}

// NewID returns a random, URL- and subject-safe message id.
func NewID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("events: no randomness: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// New wraps payload in an envelope of type typ after validating it against its schema.
func New(typ, source, server string, payload any) (*Envelope, error) {
	spec, ok := Lookup(typ)
	if !ok {
		return nil, fmt.Errorf("events: unknown type %q", typ)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("events: encode %s: %w", typ, err)
	}
	env := &Envelope{ID: NewID(), Type: typ, V: spec.Version, Time: time.Now().UTC(), Source: source, Server: server, Data: data}
	if err := validatePayload(spec, data); err != nil {
		return nil, err
	}
	// What the schema's patterns cannot say (address ranges, label lengths).
	if err := validate.Struct(payload); err != nil {
		return nil, &ValidationError{Type: typ, Reason: err.Error()}
	}
	return env, nil
}

// Check validates payload as a message of type typ would be, without making
// one: the CLI refuses bad input before it connects anywhere.
func Check(typ string, payload any) error {
	spec, ok := Lookup(typ)
	if !ok {
		return fmt.Errorf("events: unknown type %q", typ)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("events: encode %s: %w", typ, err)
	}
	if err := validatePayload(spec, data); err != nil {
		return err
	}
	if err := validate.Struct(payload); err != nil {
		return &ValidationError{Type: typ, Reason: err.Error()}
	}
	return nil
}

// Marshal encodes the envelope.
func (e *Envelope) Marshal() ([]byte, error) { return json.Marshal(e) }

// Decode parses and validates an envelope and its payload. The envelope is
// checked in Go against the same rules as schemas/envelope.v1.json (cheaper than
// the schema walk, and kept equal by a test); the payload against its schema
// (a result, the message every command ends with, by checkResult in Go).
func Decode(raw []byte) (*Envelope, error) {
	env, spec, err := decodeEnvelope(raw)
	if err != nil {
		return env, err
	}
	if spec.Type == TypeResult {
		_, err = checkResult(env.Data)
	} else {
		err = validatePayload(spec, env.Data)
	}
	if err != nil {
		return env, err
	}
	return env, nil
}

// DecodeResult parses and validates a result: its envelope and the result in
// Go (kept equal to their schemas by tests), decoded once.
func DecodeResult(raw []byte) (*Result, error) {
	env, spec, err := decodeEnvelope(raw)
	if err != nil {
		return nil, err
	}
	if spec.Type != TypeResult {
		return nil, &ValidationError{Type: env.Type, Reason: "not a result"}
	}
	return checkResult(env.Data)
}

// decodeEnvelope parses and checks an envelope, leaving its payload unchecked.
func decodeEnvelope(raw []byte) (*Envelope, Spec, error) {
	// Keys first, exactly: encoding/json alone would take "ID" for "id" and null for "".
	// One validity scan, then the members split by a small scanner (the map
	// decode of encoding/json cost a third of a round trip's JSON work).
	if !json.Valid(raw) {
		var probe any
		return nil, Spec{}, &ValidationError{Type: "envelope", Reason: json.Unmarshal(raw, &probe).Error()}
	}
	fields, err := members(raw)
	if err != nil {
		return nil, Spec{}, &ValidationError{Type: "envelope", Reason: err.Error()}
	}
	for k, v := range fields {
		if _, ok := envelopeKeys[k]; !ok {
			return nil, Spec{}, &ValidationError{Type: "envelope", Reason: fmt.Sprintf("/%s: unknown field", k)}
		}
		if k != "data" && string(v) == "null" {
			return nil, Spec{}, &ValidationError{Type: "envelope", Reason: fmt.Sprintf("/%s: null", k)}
		}
	}
	for k, required := range envelopeKeys {
		if _, ok := fields[k]; required && !ok {
			return nil, Spec{}, &ValidationError{Type: "envelope", Reason: fmt.Sprintf("/%s: missing", k)}
		}
	}
	// Each field from its own bytes: the payload is not scanned again here.
	var env Envelope
	for k, v := range fields {
		var err error
		switch k {
		case "id":
			env.ID, err = quickString(v)
		case "type":
			env.Type, err = quickString(v)
		case "v":
			err = json.Unmarshal(v, &env.V)
		case "time":
			err = json.Unmarshal(v, &env.Time)
		case "source":
			env.Source, err = quickString(v)
		case "server":
			env.Server, err = quickString(v)
		case "data":
			env.Data = v
		}
		if err != nil {
			return nil, Spec{}, &ValidationError{Type: "envelope", Reason: fmt.Sprintf("/%s: %v", k, err)}
		}
	}
	if err := env.check(); err != nil {
		return &env, Spec{}, err
	}
	spec, ok := Lookup(env.Type)
	if !ok {
		return &env, Spec{}, &ValidationError{Type: env.Type, Reason: "unknown message type"}
	}
	if env.V != spec.Version {
		return &env, Spec{}, &ValidationError{Type: env.Type, Reason: fmt.Sprintf("version %d is not supported (want %d)", env.V, spec.Version)}
	}
	return &env, spec, nil
}

// quickString decodes a plain ASCII JSON string (no escapes) directly, any
// other through encoding/json (which rewrites bad UTF-8).
func quickString(v []byte) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		plain := true
		for _, c := range v[1 : len(v)-1] {
			if c == '\\' || c == '"' || c < 0x20 || c >= 0x80 {
				plain = false
				break
			}
		}
		if plain {
			return string(v[1 : len(v)-1]), nil
		}
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, err
}

// envelopeKeys are the envelope's fields and whether each is required.
var envelopeKeys = map[string]bool{"id": true, "type": true, "v": true, "time": true, "source": true, "server": false, "data": true}

// check applies the envelope schema's rules to the values.
func (e *Envelope) check() error {
	bad := func(field, why string) error {
		return &ValidationError{Type: "envelope", Reason: "/" + field + ": " + why}
	}
	switch {
	case e.ID == "" || len(e.ID) > 160 || !idChars(e.ID):
		return bad("id", "want 1-160 of A-Z a-z 0-9 _ -")
	case e.Type == "" || !typeChars(e.Type):
		return bad("type", "want a lower-case dotted name")
	case e.V < 1:
		return bad("v", "want a version >= 1")
	case e.Source == "":
		return bad("source", "missing")
	case len(e.Data) == 0:
		return bad("data", "missing")
	}
	return nil
}

func idChars(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func typeChars(s string) bool {
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '_' || c == '.')) {
			return false
		}
	}
	return true
}

// Payload decodes the envelope's data into a value of the type's Go type.
func (e *Envelope) Payload(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return &ValidationError{Type: e.Type, Reason: err.Error()}
	}
	return nil
}

// ValidationError says that a message does not match its schema.
type ValidationError struct {
	// Type is the message type that failed, or "envelope".
	Type string
	// Reason is the validator's explanation.
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Type, e.Reason)
}
