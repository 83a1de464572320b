// Package jsonschema validates JSON values against the JSON Schemas skein
// generates into schemas/: the part of draft 2020-12 they use, and no more.
// Compile refuses any keyword it does not implement, so a schema that starts
// using a new one fails its tests instead of being half checked.
//
// Not a general validator: those at hand compile every draft's meta-schemas
// in their package init, milliseconds at the start of every skein command.
package jsonschema

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Draft is the only dialect Compile takes in "$schema".
const Draft = "https://json-schema.org/draft/2020-12/schema"

// Schema is a compiled schema. It is safe for concurrent use.
type Schema struct {
	// always is set for a boolean schema: true takes anything, false nothing.
	always *bool
	// typ is the one type the value must have, or "" for any.
	typ string
	// enum lists the allowed strings when set.
	enum []string
	// properties are the schemas of named members; required their names that must be there.
	properties map[string]*Schema
	required   []string
	// additional is the schema of other members, nil when any are allowed.
	additional *Schema
	// items is the schema of every element of an array, nil for any.
	items *Schema
	// Bounds, -1 (lengths and counts) or nil (numbers) when absent.
	minLength, maxLength int
	minItems, maxItems   int
	minimum, maximum     *float64
	pattern              *regexp.Regexp
}

// Failure is one rule a value breaks.
type Failure struct {
	// Path is the JSON Pointer (RFC 6901) of the value; "" is the document.
	Path string
	// Keyword is the schema keyword that failed, e.g. "pattern"; "false" for a false schema.
	Keyword string
	// Value is the failing value.
	Value any
	// Want is the keyword's argument: the pattern, the bound, the allowed
	// strings; for required and additionalProperties the names missing or not allowed.
	Want any
	// Message says what is wrong in words, without the path.
	Message string
}

// Error is every failure of one value, members in key order.
type Error struct {
	// Failures are the rules broken, at least one.
	Failures []Failure
}

// Error lists the failures as "PATH: MESSAGE", joined by "; ".
func (e *Error) Error() string {
	parts := make([]string, len(e.Failures))
	for i, f := range e.Failures {
		parts[i] = Where(f.Path) + ": " + f.Message
	}
	return strings.Join(parts, "; ")
}

// Where is a path for people: "/" for the document itself.
func Where(path string) string {
	if path == "" {
		return "/"
	}
	return path
}

// Compile parses a schema. It refuses what it would not check: an unknown
// keyword, a keyword where it does not apply, another dialect, a reference.
func Compile(doc []byte) (*Schema, error) {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return nil, fmt.Errorf("jsonschema: %w", err)
	}
	return compile(v, "", true)
}

// keywords are what Compile takes; format and title are annotations only, as
// draft 2020-12 makes format unless a validator is told to assert it.
var keywords = map[string]bool{
	"$schema": true, "$id": true, "title": true, "format": true,
	"type": true, "enum": true,
	"properties": true, "required": true, "additionalProperties": true,
	"items": true, "minItems": true, "maxItems": true,
	"minLength": true, "maxLength": true, "pattern": true,
	"minimum": true, "maximum": true,
}

func compile(v any, at string, root bool) (*Schema, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("jsonschema: schema %s: %s", Where(at), fmt.Sprintf(format, a...))
	}
	if b, ok := v.(bool); ok {
		return &Schema{always: &b, minLength: -1, maxLength: -1, minItems: -1, maxItems: -1}, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, bad("want an object or a boolean, got %s", typeName(v))
	}
	s := &Schema{minLength: -1, maxLength: -1, minItems: -1, maxItems: -1}
	for _, k := range sortedKeys(m) {
		if !keywords[k] {
			return nil, bad("keyword %q is not supported", k)
		}
		arg := m[k]
		var err error
		switch k {
		case "$schema":
			if !root || arg != Draft {
				err = fmt.Errorf("want %q, at the top only", Draft)
			}
		case "$id":
			if _, ok := arg.(string); !ok || !root {
				err = errors.New("want a string, at the top only")
			}
		case "title", "format":
			if _, ok := arg.(string); !ok {
				err = errors.New("want a string")
			}
		case "type":
			t, ok := arg.(string)
			if !ok || !slices.Contains([]string{"null", "boolean", "object", "array", "number", "integer", "string"}, t) {
				err = fmt.Errorf("want one type's name, got %v", arg)
			}
			s.typ = t
		case "enum":
			if s.enum, err = stringList(arg); err == nil && len(s.enum) == 0 {
				err = errors.New("want at least one string")
			}
		case "required":
			s.required, err = stringList(arg)
		case "properties":
			props, ok := arg.(map[string]any)
			if !ok {
				return nil, bad("properties: want an object")
			}
			s.properties = map[string]*Schema{}
			for _, name := range sortedKeys(props) {
				if s.properties[name], err = compile(props[name], at+"/properties/"+escape(name), false); err != nil {
					return nil, err
				}
			}
		case "additionalProperties":
			if s.additional, err = compile(arg, at+"/additionalProperties", false); err != nil {
				return nil, err
			}
		case "items":
			if s.items, err = compile(arg, at+"/items", false); err != nil {
				return nil, err
			}
		case "minLength":
			s.minLength, err = count(arg)
		case "maxLength":
			s.maxLength, err = count(arg)
		case "minItems":
			s.minItems, err = count(arg)
		case "maxItems":
			s.maxItems, err = count(arg)
		case "minimum":
			s.minimum, err = bound(arg)
		case "maximum":
			s.maximum, err = bound(arg)
		case "pattern":
			p, ok := arg.(string)
			if !ok {
				err = errors.New("want a string")
			} else {
				s.pattern, err = compilePattern(p)
			}
		}
		if err != nil {
			return nil, bad("%s: %v", k, err)
		}
	}
	// A keyword of another type is ignored by the standard: refused here, as it
	// says the schema means something it does not.
	for k, types := range map[string][]string{
		"properties": {"object"}, "required": {"object"}, "additionalProperties": {"object"},
		"items": {"array"}, "minItems": {"array"}, "maxItems": {"array"},
		"minLength": {"string"}, "maxLength": {"string"}, "pattern": {"string"}, "format": {"string"},
		"minimum": {"integer", "number"}, "maximum": {"integer", "number"}, "enum": {"string", ""},
	} {
		if _, ok := m[k]; ok && !slices.Contains(types, s.typ) {
			return nil, bad("%s with type %q", k, s.typ)
		}
	}
	return s, nil
}

func stringList(v any) ([]string, error) {
	a, ok := v.([]any)
	if !ok {
		return nil, errors.New("want an array of strings")
	}
	out := make([]string, len(a))
	for i, e := range a {
		if out[i], ok = e.(string); !ok {
			return nil, errors.New("want an array of strings")
		}
	}
	return out, nil
}

func count(v any) (int, error) {
	f, ok := v.(float64)
	if !ok || f < 0 || f != math.Trunc(f) || f > math.MaxInt32 {
		return 0, fmt.Errorf("want a whole number >= 0, got %v", v)
	}
	return int(f), nil
}

// bound takes whole numbers only: compared as float64 they are exact, where a
// fraction would round where the decimal does not.
func bound(v any) (*float64, error) {
	f, ok := v.(float64)
	if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return nil, fmt.Errorf("want a whole number, got %v", v)
	}
	return &f, nil
}

// patterns holds each pattern compiled once: many fields share one kind's.
var patterns sync.Map

func compilePattern(p string) (*regexp.Regexp, error) {
	if re, ok := patterns.Load(p); ok {
		return re.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return nil, err
	}
	patterns.Store(p, re)
	return re, nil
}

// Validate checks v, a value as encoding/json decodes JSON into an any. The
// error is an *Error naming every failing value.
func (s *Schema) Validate(v any) error {
	var fs []Failure
	s.validate(v, "", &fs)
	if len(fs) > 0 {
		return &Error{Failures: fs}
	}
	return nil
}

func (s *Schema) validate(v any, at string, fs *[]Failure) {
	fail := func(kw string, want any, format string, a ...any) {
		*fs = append(*fs, Failure{Path: at, Keyword: kw, Value: v, Want: want, Message: fmt.Sprintf(format, a...)})
	}
	if s.always != nil {
		if !*s.always {
			fail("false", false, "false schema")
		}
		return
	}
	// A wrong type or value says all there is to say about this value.
	if s.typ != "" && !hasType(v, s.typ) {
		fail("type", s.typ, "got %s, want %s", typeName(v), s.typ)
		return
	}
	if s.enum != nil {
		if str, ok := v.(string); !ok || !slices.Contains(s.enum, str) {
			if len(s.enum) == 1 {
				fail("enum", s.enum, "value must be %s", quote(s.enum[0]))
			} else {
				fail("enum", s.enum, "value must be one of %s", quoteAll(s.enum))
			}
			return
		}
	}
	switch v := v.(type) {
	case map[string]any:
		s.object(v, at, fs, fail)
	case []any:
		if s.minItems >= 0 && len(v) < s.minItems {
			fail("minItems", s.minItems, "minItems: got %d, want %d", len(v), s.minItems)
		}
		if s.maxItems >= 0 && len(v) > s.maxItems {
			fail("maxItems", s.maxItems, "maxItems: got %d, want %d", len(v), s.maxItems)
		}
		if s.items != nil {
			for i, e := range v {
				s.items.validate(e, at+"/"+strconv.Itoa(i), fs)
			}
		}
	case string:
		if s.minLength >= 0 || s.maxLength >= 0 {
			n := utf8.RuneCountInString(v)
			if s.minLength >= 0 && n < s.minLength {
				fail("minLength", s.minLength, "minLength: got %d, want %d", n, s.minLength)
			}
			if s.maxLength >= 0 && n > s.maxLength {
				fail("maxLength", s.maxLength, "maxLength: got %d, want %d", n, s.maxLength)
			}
		}
		if s.pattern != nil && !s.pattern.MatchString(v) {
			fail("pattern", s.pattern.String(), "%s does not match pattern %s", quote(v), quote(s.pattern.String()))
		}
	case float64:
		if s.minimum != nil && v < *s.minimum {
			fail("minimum", *s.minimum, "minimum: got %s, want %s", number(v), number(*s.minimum))
		}
		if s.maximum != nil && v > *s.maximum {
			fail("maximum", *s.maximum, "maximum: got %s, want %s", number(v), number(*s.maximum))
		}
	}
}

func (s *Schema) object(m map[string]any, at string, fs *[]Failure, fail func(string, any, string, ...any)) {
	var missing []string
	for _, name := range s.required {
		if _, ok := m[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) == 1 {
		fail("required", missing, "missing property %s", quote(missing[0]))
	} else if len(missing) > 1 {
		fail("required", missing, "missing properties %s", quoteAll(missing))
	}
	var extra []string
	for _, name := range sortedKeys(m) {
		sub, ok := s.properties[name]
		if !ok {
			sub = s.additional
		}
		switch {
		case sub == nil:
		case !ok && sub.always != nil && !*sub.always:
			extra = append(extra, name)
		default:
			sub.validate(m[name], at+"/"+escape(name), fs)
		}
	}
	if len(extra) > 0 {
		fail("additionalProperties", extra, "additional properties %s not allowed", quoteAll(extra))
	}
}

func hasType(v any, t string) bool {
	switch t {
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	default:
		return typeName(v) == t
	}
}

// typeName is the JSON type of v; a number is "number" even when whole.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T (not a decoded JSON value)", v)
}

// number writes a whole number in full, any other in Go's shortest form.
func number(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// quote puts s in single quotes, escaped as Go would in double quotes.
func quote(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`)
	return "'" + strings.ReplaceAll(q, `'`, `\'`) + "'"
}

func quoteAll(a []string) string {
	q := make([]string, len(a))
	for i, s := range a {
		q[i] = quote(s)
	}
	return strings.Join(q, ", ")
}

// escape makes a member name one token of a JSON Pointer.
func escape(name string) string {
	return strings.ReplaceAll(strings.ReplaceAll(name, "~", "~0"), "/", "~1")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
