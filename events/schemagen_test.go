package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	invopop "github.com/invopop/jsonschema"

	"github.com/skeinhq/skein/internal/validate"
	"github.com/skeinhq/skein/schemas"
)

// generateSchema renders the JSON Schema of a Go type with the given file name and title.
func generateSchema(name, title string, t reflect.Type) ([]byte, error) {
	r := &invopop.Reflector{DoNotReference: true, ExpandedStruct: true}
	s := r.ReflectFromType(t)
	applyKinds(s, t)
	s.ID = invopop.ID(schemas.BaseURL + name)
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
func applyKinds(s *invopop.Schema, t reflect.Type) {
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

// generateAll renders every schema: the envelope's and each registered type's, by file name.
func generateAll() (map[string][]byte, error) {
	out := map[string][]byte{}
	b, err := generateSchema(EnvelopeSchemaName, "skein message envelope", reflect.TypeFor[Envelope]())
	if err != nil {
		return nil, err
	}
	out[EnvelopeSchemaName] = b
	for _, s := range Specs() {
		b, err := generateSchema(s.SchemaName(), s.Doc, s.Go)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Type, err)
		}
		out[s.SchemaName()] = b
	}
	return out, nil
}
