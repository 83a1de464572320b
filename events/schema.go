package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/invopop/jsonschema"
	sjs "github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/skeinhq/skein/internal/validate"
	"github.com/skeinhq/skein/schemas"
)

// EnvelopeSchemaName is the schema file of the envelope.
const EnvelopeSchemaName = "envelope.v1.json"

func schemaName(typ string, version int) string { return fmt.Sprintf("%s.v%d.json", typ, version) }

// GenerateSchema renders the JSON Schema of a Go type with the given file name and title.
func GenerateSchema(name, title string, t reflect.Type) ([]byte, error) {
	r := &jsonschema.Reflector{DoNotReference: true, ExpandedStruct: true}
	s := r.ReflectFromType(t)
	applyKinds(s, t)
	s.ID = jsonschema.ID(schemas.BaseURL + name)
	s.Title = title
	s.Version = "https://json-schema.org/draft/2020-12/schema"
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// applyKinds gives every field tagged `valid:"KIND"` the pattern and maximum
// length of that kind from internal/validate: the schemas and the Go checks are
// one set of rules.
func applyKinds(s *jsonschema.Schema, t reflect.Type) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
		if s.Items != nil {
			s = s.Items
		}
	}
	if t.Kind() != reflect.Struct || s == nil || s.Properties == nil {
		return
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if f.Anonymous {
			applyKinds(s, f.Type)
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		prop, ok := s.Properties.Get(name)
		if !ok {
			continue
		}
		tag := f.Tag.Get("valid")
		if tag == "" {
			applyKinds(prop, f.Type)
			continue
		}
		k, ok := validate.Lookup(tag)
		if !ok {
			panic(fmt.Sprintf("events: unknown kind %q on %s.%s", tag, t.Name(), f.Name))
		}
		target := prop
		if f.Type.Kind() == reflect.Slice && prop.Items != nil {
			target = prop.Items
		}
		max := uint64(k.MaxLength)
		target.Pattern, target.MaxLength = k.Pattern, &max
	}
}

// GenerateAll renders every schema: the envelope's and each registered type's, by file name.
func GenerateAll() (map[string][]byte, error) {
	out := map[string][]byte{}
	b, err := GenerateSchema(EnvelopeSchemaName, "skein message envelope", reflect.TypeFor[Envelope]())
	if err != nil {
		return nil, err
	}
	out[EnvelopeSchemaName] = b
	for _, s := range Specs() {
		b, err := GenerateSchema(s.SchemaName(), s.Doc, s.Go)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Type, err)
		}
		out[s.SchemaName()] = b
	}
	return out, nil
}

var (
	compileOnce sync.Once
	compiled    map[string]*sjs.Schema
	compileErr  error
	// byType is each registered type's schema at its version, and outputs
	// the spec of each command output type: looked up on every message, so
	// found once rather than by a name built or a registry walked each time.
	byType  map[string]typeSchema
	outputs map[reflect.Type]Spec
)

// typeSchema is a registered type's schema and the version it is for.
type typeSchema struct {
	version int
	schema  *sjs.Schema
}

// compile loads every embedded schema once; they are small and few.
func compile() (map[string]*sjs.Schema, error) {
	compileOnce.Do(func() {
		c := sjs.NewCompiler()
		entries, err := schemas.FS.ReadDir(".")
		if err != nil {
			compileErr = err
			return
		}
		for _, e := range entries {
			raw, err := schemas.FS.ReadFile(e.Name())
			if err != nil {
				compileErr = err
				return
			}
			doc, err := sjs.UnmarshalJSON(bytes.NewReader(raw))
			if err != nil {
				compileErr = fmt.Errorf("schema %s: %w", e.Name(), err)
				return
			}
			if err := c.AddResource(schemas.BaseURL+e.Name(), doc); err != nil {
				compileErr = err
				return
			}
		}
		compiled = map[string]*sjs.Schema{}
		for _, e := range entries {
			s, err := c.Compile(schemas.BaseURL + e.Name())
			if err != nil {
				compileErr = fmt.Errorf("schema %s: %w", e.Name(), err)
				return
			}
			compiled[e.Name()] = s
		}
		byType, outputs = map[string]typeSchema{}, map[reflect.Type]Spec{}
		for _, s := range Specs() { // sorted: one output spec per Go type, always the same
			if c, ok := compiled[s.SchemaName()]; ok {
				byType[s.Type] = typeSchema{s.Version, c}
			}
			if _, ok := outputs[s.Go]; !ok && s.Kind != KindCommand {
				outputs[s.Go] = s
			}
		}
	})
	return compiled, compileErr
}

func validateRaw(name, typ string, raw []byte) error {
	all, err := compile()
	if err != nil {
		return err
	}
	s, ok := all[name]
	if !ok {
		return &ValidationError{Type: typ, Reason: "no schema " + name}
	}
	return validateWith(s, typ, raw)
}

// validateWith checks raw against schema s.
func validateWith(s *sjs.Schema, typ string, raw []byte) error {
	// encoding/json into any is what the validator takes, and cheaper than its
	// own reader; it refuses trailing data too.
	var inst any
	if err := json.Unmarshal(raw, &inst); err != nil {
		return &ValidationError{Type: typ, Reason: "not JSON: " + err.Error()}
	}
	if err := s.Validate(inst); err != nil {
		return &ValidationError{Type: typ, Reason: flatten(err)}
	}
	return nil
}

// flatten turns the validator's nested report into one line naming each failing field.
func flatten(err error) string {
	ve, ok := err.(*sjs.ValidationError)
	if !ok {
		return err.Error()
	}
	var parts []string
	var walk func(e *sjs.ValidationError)
	seen := map[string]bool{}
	walk = func(e *sjs.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			msg := e.ErrorKind.LocalizedString(printer)
			// A kind's pattern is told as what the value must be, not as a regexp.
			if p, ok := e.ErrorKind.(*kind.Pattern); ok {
				if k, ok := validate.ByPattern(p.Want); ok {
					msg = fmt.Sprintf("%q is not %s", p.Got, k.What)
				}
			}
			if m, ok := e.ErrorKind.(*kind.MaxLength); ok {
				msg = fmt.Sprintf("longer than %d characters", m.Want)
			}
			if line := loc + ": " + msg; !seen[line] {
				seen[line] = true
				parts = append(parts, line)
			}
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return strings.Join(parts, "; ")
}

var printer = message.NewPrinter(language.English)

func validateEnvelope(raw []byte) error { return validateRaw(EnvelopeSchemaName, "envelope", raw) }

func validatePayload(spec Spec, data []byte) error {
	if _, err := compile(); err != nil {
		return err
	}
	if ts, ok := byType[spec.Type]; ok && ts.version == spec.Version {
		return validateWith(ts.schema, spec.Type, data)
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
	if _, err := compile(); err != nil {
		return err // not an output let through unchecked
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
	_, _ = compile() // builds outputs
	s, ok := outputs[t]
	return s, ok
}
