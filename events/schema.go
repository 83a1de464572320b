package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/skeinhq/skein/internal/jsonschema"
	"github.com/skeinhq/skein/internal/validate"
	"github.com/skeinhq/skein/schemas"
)

// EnvelopeSchemaName is the schema file of the envelope.
const EnvelopeSchemaName = "envelope.v1.json"

func schemaName(typ string, version int) string { return fmt.Sprintf("%s.v%d.json", typ, version) }

// schemaIndex finds the compiled schemas, each compiled on its first use: a
// command compiles the few it sends and reads, not all of them.
type schemaIndex struct {
	// byName is every embedded schema by file name.
	byName map[string]*lazySchema
	// byType is each registered type's schema at its version, and outputs
	// the spec of each command output type: looked up on every message, so
	// found once rather than by a name built or a registry walked each time.
	byType  map[string]*lazySchema
	outputs map[reflect.Type]Spec
}

// lazySchema is one schema file, compiled once when first asked for.
type lazySchema struct {
	// version is the registered type's version the file is for (byType only).
	version int
	get     func() (*jsonschema.Schema, error)
}

// index lists the schema files once; it reads and compiles none of them.
var index = sync.OnceValue(func() schemaIndex {
	idx := schemaIndex{byName: map[string]*lazySchema{}, byType: map[string]*lazySchema{}, outputs: map[reflect.Type]Spec{}}
	entries, err := schemas.FS.ReadDir(".")
	if err != nil {
		panic(fmt.Sprintf("events: the embedded schemas: %v", err))
	}
	for _, e := range entries {
		name := e.Name()
		idx.byName[name] = &lazySchema{get: sync.OnceValues(func() (*jsonschema.Schema, error) {
			raw, err := schemas.FS.ReadFile(name)
			if err != nil {
				return nil, err
			}
			s, err := jsonschema.Compile(raw)
			if err != nil {
				return nil, fmt.Errorf("schema %s: %w", name, err)
			}
			return s, nil
		})}
	}
	for _, s := range Specs() { // sorted: one output spec per Go type, always the same
		if l, ok := idx.byName[s.SchemaName()]; ok {
			idx.byType[s.Type] = &lazySchema{version: s.Version, get: l.get}
		}
		if _, ok := idx.outputs[s.Go]; !ok && s.Kind != KindCommand {
			idx.outputs[s.Go] = s
		}
	}
	return idx
})

func validateRaw(name, typ string, raw []byte) error {
	l, ok := index().byName[name]
	if !ok {
		return &ValidationError{Type: typ, Reason: "no schema " + name}
	}
	return validateWith(l, typ, raw)
}

// validateWith checks raw against the schema l.
func validateWith(l *lazySchema, typ string, raw []byte) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	// encoding/json into any is what the validator takes; it refuses trailing data too.
	var inst any
	if err := json.Unmarshal(raw, &inst); err != nil {
		return &ValidationError{Type: typ, Reason: "not JSON: " + err.Error()}
	}
	if err := s.Validate(inst); err != nil {
		return &ValidationError{Type: typ, Reason: explain(err)}
	}
	return nil
}

// explain turns the validator's failures into one line naming each failing
// field; a kind's pattern is told as what the value must be, not as a regexp.
func explain(err error) string {
	var se *jsonschema.Error
	if !errors.As(err, &se) {
		return err.Error()
	}
	parts := make([]string, len(se.Failures))
	for i, f := range se.Failures {
		msg := f.Message
		switch f.Keyword {
		case "pattern":
			if k, ok := validate.ByPattern(f.Want.(string)); ok {
				msg = fmt.Sprintf("%q is not %s", f.Value, k.What)
			}
		case "maxLength":
			msg = fmt.Sprintf("longer than %d characters", f.Want)
		}
		parts[i] = jsonschema.Where(f.Path) + ": " + msg
	}
	return strings.Join(parts, "; ")
}

func validateEnvelope(raw []byte) error { return validateRaw(EnvelopeSchemaName, "envelope", raw) }

func validatePayload(spec Spec, data []byte) error {
	if l, ok := index().byType[spec.Type]; ok && l.version == spec.Version {
		return validateWith(l, spec.Type, data)
	}
	return validateRaw(spec.SchemaName(), spec.Type, data)
}

// ValidateState checks a record against the schema of its state type.
func ValidateState(typ string, raw []byte) error {
	spec, ok := Lookup(typ)
	if !ok || spec.Kind != KindState {
		return &ValidationError{Type: typ, Reason: "not a state type"}
	}
	return validatePayload(spec, raw)
}

// ValidateOutput checks a command's result output against the schema of its output type.
func ValidateOutput(cmdType string, output []byte) error {
	spec, ok := Lookup(cmdType)
	if !ok || spec.Output == nil || len(output) == 0 {
		return nil
	}
	out, ok := outputSpec(spec.Output)
	if !ok {
		return nil
	}
	return validatePayload(out, output)
}

// outputSpec finds the state or event spec whose Go type is the command's
// output type (the first by type name when several share it).
func outputSpec(t reflect.Type) (Spec, bool) {
	s, ok := index().outputs[t]
	return s, ok
}
