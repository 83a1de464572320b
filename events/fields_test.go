package events

import (
	"encoding/json"
	"testing"
)

// The splitter finds the same members as encoding/json does, keys exact,
// for any valid object; anything else is refused or sent the slow way.
func FuzzTopFields(f *testing.F) {
	f.Add(`{"id":"a","type":"ping","v":1,"data":{"x":[1,"}",{"y":"\""}]}}`)
	f.Add(`{ "ID" : "a" , "id":"b", "n": -1.5e3, "t": true, "z": null }`)
	f.Add(`{"a\u0062":1}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, s string) {
		raw := []byte(s)
		if !json.Valid(raw) {
			return
		}
		var want map[string]json.RawMessage
		if json.Unmarshal(raw, &want) != nil {
			if _, err := topFields(raw); err == nil {
				t.Fatalf("%q is no object but was split", s)
			}
			return
		}
		if want == nil {
			return // null: no object (Decode refuses it either way)
		}
		got, err := topFields(raw)
		if err == errSlowPath {
			return
		}
		if err != nil || len(got) != len(want) {
			t.Fatalf("%q: got %v (%v), want %v", s, got, err, want)
		}
		for k, v := range want {
			var a, b any
			_ = json.Unmarshal(v, &a)
			if json.Unmarshal(got[k], &b) != nil || !jsonEqual(a, b) {
				t.Fatalf("%q: member %q = %s, want %s", s, k, got[k], v)
			}
		}
	})
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
