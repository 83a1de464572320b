package jsonschema_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"regexp"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	sjs "github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/jsonschema"
	"github.com/skeinhq/skein/schemas"
)

// pair is one schema of schemas/, compiled by this package and by the
// reference validator it replaced (santhosh-tekuri/jsonschema, a full draft
// 2020-12 implementation, kept for tests only), with its parsed source.
type pair struct {
	name string
	doc  map[string]any
	ours *jsonschema.Schema
	ref  *sjs.Schema
}

var pairs = sync.OnceValues(func() ([]pair, error) {
	entries, err := schemas.FS.ReadDir(".")
	if err != nil {
		return nil, err
	}
	c := sjs.NewCompiler()
	var out []pair
	for _, e := range entries {
		raw, err := schemas.FS.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		p := pair{name: e.Name()}
		if err := json.Unmarshal(raw, &p.doc); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		if p.ours, err = jsonschema.Compile(raw); err != nil {
			return nil, err
		}
		doc, err := sjs.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		if err := c.AddResource(schemas.BaseURL+e.Name(), doc); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	for i := range out {
		if out[i].ref, err = c.Compile(schemas.BaseURL + out[i].name); err != nil {
			return nil, err
		}
	}
	return out, nil
})

func loadPairs(t testing.TB) []pair {
	t.Helper()
	ps, err := pairs()
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// failures are the (path, keyword) pairs a validator's error names, sorted.
func ourFailures(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, f := range err.(*jsonschema.Error).Failures {
		out = append(out, f.Path+" "+f.Keyword)
	}
	sort.Strings(out)
	return out
}

func refFailures(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	var walk func(e *sjs.ValidationError)
	walk = func(e *sjs.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		path := ""
		for _, tok := range e.InstanceLocation {
			path += "/" + strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
		}
		kw := "false"
		if kp := e.ErrorKind.KeywordPath(); len(kp) > 0 {
			kw = kp[len(kp)-1]
		}
		out = append(out, path+" "+kw)
	}
	walk(err.(*sjs.ValidationError))
	sort.Strings(out)
	return out
}

// agree fails unless both validators accept raw under p, or both refuse it
// naming the same keywords at the same places.
func agree(t testing.TB, p pair, raw []byte) (accepted bool) {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return false
	}
	ours, ref := p.ours.Validate(v), p.ref.Validate(v)
	if (ours == nil) != (ref == nil) || !slices.Equal(ourFailures(ours), refFailures(ref)) {
		t.Fatalf("%s: %s\nours:      %v\nreference: %v", p.name, raw, ours, ref)
	}
	return ours == nil
}

// TestMatchesReference validates, against every schema in schemas/, documents
// made from the schema (valid ones, then each mutated a few times) and each
// registered Go type's zero value, with this package and with the reference:
// both must give the same verdict for the same reasons.
func TestMatchesReference(t *testing.T) {
	ps := loadPairs(t)
	byName := map[string]pair{}
	for _, p := range ps {
		byName[p.name] = p
	}
	for _, s := range events.Specs() {
		raw, err := json.Marshal(reflect.New(s.Go).Interface())
		if err != nil {
			t.Fatal(err)
		}
		agree(t, byName[s.SchemaName()], raw)
	}
	refused := 0
	for i, p := range ps {
		r := rand.New(rand.NewPCG(uint64(i), 29))
		for range 20 {
			doc := generate(r, p.doc)
			raw, _ := json.Marshal(doc)
			if !agree(t, p, raw) {
				t.Fatalf("%s: a generated document is refused: %s", p.name, raw)
			}
			for range 10 {
				raw, _ := json.Marshal(mutate(r, doc))
				if !agree(t, p, raw) {
					refused++
				}
			}
		}
	}
	if refused == 0 {
		t.Fatal("no mutated document was refused: the mutations test nothing")
	}
}

// Any JSON document gets the same verdict for the same reasons from this
// package and from the reference, under every schema of schemas/.
func FuzzMatchesReference(f *testing.F) {
	ps := loadPairs(f)
	r := rand.New(rand.NewPCG(29, 4))
	for i, p := range ps {
		doc := generate(r, p.doc)
		raw, _ := json.Marshal(doc)
		f.Add(uint8(i), string(raw))
		// Small seeds only: the fuzzer minimises what it finds, slowly when large.
		if raw, _ = json.Marshal(mutate(r, doc)); len(raw) < 2048 {
			f.Add(uint8(i), string(raw))
		}
	}
	f.Fuzz(func(t *testing.T, schema uint8, doc string) {
		agree(t, ps[int(schema)%len(ps)], []byte(doc))
	})
}

// TestCompileRefusesWhatItDoesNotCheck: a keyword this package does not
// implement, or one it would ignore, fails Compile rather than passing
// documents unchecked.
func TestCompileRefusesWhatItDoesNotCheck(t *testing.T) {
	for _, doc := range []string{
		`{"type":"string","const":"a"}`,
		`{"type":"object","properties":{"a":{"type":"integer","exclusiveMinimum":0}}}`,
		`{"$ref":"#/$defs/a","$defs":{"a":true}}`,
		`{"oneOf":[true]}`,
		`{"type":["string","null"]}`,
		`{"type":"object","properties":{"a":{"$schema":"https://json-schema.org/draft/2020-12/schema"}}}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#"}`,
		`{"type":"string","minimum":1}`,
		`{"type":"integer","minimum":0.5}`,
		`{"type":"integer","maxLength":3}`,
		`{"properties":{}}`,
		`{"type":"integer","enum":[1,2]}`,
		`{"type":"string","pattern":"(?<n>a"}`,
		`{"type":"array","items":{"type":"strin"}}`,
		`[]`,
	} {
		if _, err := jsonschema.Compile([]byte(doc)); err == nil {
			t.Errorf("Compile(%s) took it", doc)
		}
	}
}

// TestErrorNamesEachFailure: the error says where and what, every failure in
// member order, in the words the CLI shows.
func TestErrorNamesEachFailure(t *testing.T) {
	s, err := jsonschema.Compile([]byte(`{"type":"object","additionalProperties":false,"required":["kind","port"],
		"properties":{"kind":{"type":"string","enum":["a","b"]},"port":{"type":"integer","minimum":1,"maximum":65535},
		"tags":{"type":"array","maxItems":1,"items":{"type":"string","maxLength":3,"pattern":"^[a-z]*$"}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for doc, want := range map[string]string{
		`{"kind":"c","port":70000,"tags":["Ab","abcd",1],"x/y":1,"b":2}`: `/kind: value must be one of 'a', 'b'; /port: maximum: got 70000, want 65535; ` +
			`/tags: maxItems: got 3, want 1; /tags/0: 'Ab' does not match pattern '^[a-z]*$'; /tags/1: maxLength: got 4, want 3; ` +
			`/tags/2: got number, want string; /: additional properties 'b', 'x/y' not allowed`,
		`{"port":1.5}`: `/: missing property 'kind'; /port: got number, want integer`,
		`{}`:           `/: missing properties 'kind', 'port'`,
		`null`:         `/: got null, want object`,
		`{"kind":"a","port":1,"tags":["a'\"\n"]}`: `/tags/0: maxLength: got 4, want 3; /tags/0: 'a\'"\n' does not match pattern '^[a-z]*$'`,
	} {
		var v any
		if err := json.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(v); err == nil || err.Error() != want {
			t.Errorf("%s:\n got %v\nwant %s", doc, err, want)
		}
	}
}

// generate makes a random document that the schema s accepts.
func generate(r *rand.Rand, s any) any {
	m, ok := s.(map[string]any)
	if !ok {
		return anyValue(r, 1)
	}
	if e, ok := m["enum"].([]any); ok {
		return e[r.IntN(len(e))]
	}
	switch m["type"] {
	case "object":
		out := map[string]any{}
		props, _ := m["properties"].(map[string]any)
		req, _ := m["required"].([]any)
		for name, ps := range props {
			if slices.Contains(req, any(name)) || r.IntN(2) == 0 {
				out[name] = generate(r, ps)
			}
		}
		if add, ok := m["additionalProperties"].(map[string]any); ok {
			for range r.IntN(3) {
				out[randString(r, 1+r.IntN(6))] = generate(r, add)
			}
		}
		return out
	case "array":
		lo, hi := bounds(m, "minItems", "maxItems", 0, 3)
		out := []any{}
		for range lo + r.IntN(hi-lo+1) {
			out = append(out, generate(r, m["items"]))
		}
		return out
	case "string":
		if p, ok := m["pattern"].(string); ok {
			lo, hi := bounds(m, "minLength", "maxLength", 0, 1<<20)
			re := compiled(p)
			for range 50 {
				if s := fromPattern(r, re.syntax); re.MatchString(s) && inRange(utf8.RuneCountInString(s), lo, hi) {
					return s
				}
			}
			panic("no string of " + p)
		}
		lo, hi := bounds(m, "minLength", "maxLength", 0, 12)
		return randString(r, lo+r.IntN(hi-lo+1))
	case "integer":
		lo, hi := bounds(m, "minimum", "maximum", -3, 100000)
		return lo + r.IntN(hi-lo+1)
	case "number":
		return r.Float64() * 100
	case "boolean":
		return r.IntN(2) == 0
	case "null":
		return nil
	}
	return anyValue(r, 1)
}

func bounds(m map[string]any, min, max string, dmin, dspan int) (int, int) {
	lo, hi := dmin, -1
	if v, ok := m[min].(float64); ok {
		lo = int(v)
	}
	if v, ok := m[max].(float64); ok {
		hi = int(v)
	}
	if hi < 0 || hi > lo+dspan {
		hi = lo + dspan
	}
	return lo, hi
}

func inRange(n, lo, hi int) bool { return n >= lo && n <= hi }

// pattern is a regular expression and its syntax tree, to make strings from.
type pattern struct {
	*regexp.Regexp
	syntax *syntax.Regexp
}

var patterns = map[string]pattern{}

func compiled(p string) pattern {
	if c, ok := patterns[p]; ok {
		return c
	}
	tree, err := syntax.Parse(p, syntax.Perl)
	if err != nil {
		panic(err)
	}
	c := pattern{regexp.MustCompile(p), tree}
	patterns[p] = c
	return c
}

// fromPattern makes a random string that re likely matches.
func fromPattern(r *rand.Rand, re *syntax.Regexp) string {
	var b strings.Builder
	var walk func(re *syntax.Regexp)
	walk = func(re *syntax.Regexp) {
		repeat := func(min, max int) {
			if max < 0 || max > min+3 {
				max = min + 3
			}
			for range min + r.IntN(max-min+1) {
				walk(re.Sub[0])
			}
		}
		switch re.Op {
		case syntax.OpLiteral:
			b.WriteString(string(re.Rune))
		case syntax.OpCharClass:
			i := 2 * r.IntN(len(re.Rune)/2)
			lo, hi := re.Rune[i], re.Rune[i+1]
			if hi > lo+200 {
				hi = lo + 200
			}
			b.WriteRune(lo + rune(r.IntN(int(hi-lo)+1)))
		case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
			b.WriteByte(byte('!' + r.IntN(94)))
		case syntax.OpCapture:
			walk(re.Sub[0])
		case syntax.OpConcat:
			for _, s := range re.Sub {
				walk(s)
			}
		case syntax.OpAlternate:
			walk(re.Sub[r.IntN(len(re.Sub))])
		case syntax.OpStar:
			repeat(0, -1)
		case syntax.OpPlus:
			repeat(1, -1)
		case syntax.OpQuest:
			repeat(0, 1)
		case syntax.OpRepeat:
			repeat(re.Min, re.Max)
		}
	}
	walk(re)
	return b.String()
}

// chars are what random strings are made of: what skein's patterns take and
// what they must refuse.
var chars = []rune("aZ09-_.:/;= \n\t'\"\\é€😀\x00~")

func randString(r *rand.Rand, n int) string {
	var b strings.Builder
	for range n {
		b.WriteRune(chars[r.IntN(len(chars))])
	}
	return b.String()
}

// anyValue is a random JSON value of any type, nested up to depth.
func anyValue(r *rand.Rand, depth int) any {
	switch r.IntN(8) {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return []any{0, -1, 1, 1.5, 255, 256, 65535, 65536, 1e21, -1e9}[r.IntN(10)]
	case 3:
		return r.NormFloat64() * 1000
	case 4:
		if depth > 0 {
			return []any{anyValue(r, depth-1)}
		}
	case 5:
		if depth > 0 {
			return map[string]any{randString(r, 2): anyValue(r, depth-1)}
		}
	}
	return randString(r, r.IntN(8))
}

// mutate returns a copy of doc with one to three random changes: a value
// replaced, a member dropped or added, a string or array stretched.
func mutate(r *rand.Rand, doc any) any {
	var v any
	raw, _ := json.Marshal(doc)
	_ = json.Unmarshal(raw, &v)
	for range 1 + r.IntN(3) {
		v = change(r, v)
	}
	return v
}

// stretch are lengths about skein's maximum lengths.
var stretch = []int{63, 64, 65, 160, 161, 254, 257, 1025, 2049, 8193, 65537, 262145}

func change(r *rand.Rand, v any) any {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		switch n := r.IntN(10); {
		case n == 0 || len(keys) == 0:
			x[randString(r, 1+r.IntN(5))] = anyValue(r, 1)
		case n == 1:
			delete(x, keys[r.IntN(len(keys))])
		default:
			k := keys[r.IntN(len(keys))]
			x[k] = change(r, x[k])
		}
		return x
	case []any:
		switch n := r.IntN(6); {
		case n == 0:
			return []any{}
		case n == 1:
			for range 300 {
				x = append(x, anyValue(r, 0))
			}
			return x
		case n == 2 || len(x) == 0:
			return append(x, anyValue(r, 1))
		default:
			i := r.IntN(len(x))
			x[i] = change(r, x[i])
			return x
		}
	case string:
		switch r.IntN(5) {
		case 0:
			return ""
		case 1: // past a maxLength, still of its pattern where 'a' is
			return x + strings.Repeat("a", max(0, stretch[r.IntN(len(stretch))]-utf8.RuneCountInString(x)))
		case 2:
			return x + string(chars[r.IntN(len(chars))])
		case 3:
			return string(chars[r.IntN(len(chars))]) + x
		}
	case float64:
		switch r.IntN(4) {
		case 0:
			return x + 1
		case 1:
			return x - 1
		case 2:
			return -x
		}
	}
	return anyValue(r, 1)
}
