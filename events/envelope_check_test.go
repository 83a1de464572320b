package events

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestEnvelopeCheckMatchesSchema keeps Decode's Go check of the envelope equal to
// schemas/envelope.v1.json: for each mutation both accept or both refuse.
func TestEnvelopeCheckMatchesSchema(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{"id": "abc-123_X", "type": "server.ping", "v": 1, "time": time.Now().UTC().Format(time.RFC3339Nano), "source": "cli", "server": "s1", "data": map[string]any{}}
	}
	long := make([]byte, 161)
	for i := range long {
		long[i] = 'a'
	}
	cases := map[string]func(m map[string]any){
		"valid":            func(m map[string]any) {},
		"no server":        func(m map[string]any) { delete(m, "server") },
		"no id":            func(m map[string]any) { delete(m, "id") },
		"empty id":         func(m map[string]any) { m["id"] = "" },
		"id with dot":      func(m map[string]any) { m["id"] = "a.b" },
		"id with space":    func(m map[string]any) { m["id"] = "a b" },
		"id 160":           func(m map[string]any) { m["id"] = string(long[:160]) },
		"id 161":           func(m map[string]any) { m["id"] = string(long) },
		"no type":          func(m map[string]any) { delete(m, "type") },
		"upper type":       func(m map[string]any) { m["type"] = "Server.ping" },
		"type digit first": func(m map[string]any) { m["type"] = "1server" },
		"v zero":           func(m map[string]any) { m["v"] = 0 },
		"no v":             func(m map[string]any) { delete(m, "v") },
		"no time":          func(m map[string]any) { delete(m, "time") },
		"no source":        func(m map[string]any) { delete(m, "source") },
		"empty source":     func(m map[string]any) { m["source"] = "" },
		"no data":          func(m map[string]any) { delete(m, "data") },
		"extra field":      func(m map[string]any) { m["priority"] = 1 },
		"upper-case keys":  func(m map[string]any) { m["ID"] = m["id"]; delete(m, "id") },
		"null server":      func(m map[string]any) { m["server"] = nil },
		"null id":          func(m map[string]any) { m["id"] = nil },
		"null data":        func(m map[string]any) { m["data"] = nil },
		"zero time":        func(m map[string]any) { m["time"] = "0001-01-01T00:00:00Z" },
		"string v":         func(m map[string]any) { m["v"] = "1" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := base()
			mutate(m)
			raw, _ := json.Marshal(m)
			schemaErr := validateEnvelope(raw)
			_, goErr := Decode(raw)
			if goErr != nil {
				if ve, ok := goErr.(*ValidationError); ok && ve.Type != "envelope" {
					goErr = nil // the envelope passed; only the payload was refused
				}
			}
			if (schemaErr == nil) != (goErr == nil) {
				t.Fatalf("schema says %v, Decode says %v", schemaErr, goErr)
			}
		})
	}
}

// TestDecodeTakesEscapedKeys: a key written with an escape is the same key
// (the schema sees it so); the slow path once dropped every member.
func TestDecodeTakesEscapedKeys(t *testing.T) {
	env, err := New(TypePing, "cli", "s1", Ping{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := env.Marshal()
	escaped := []byte(strings.Replace(string(raw), `"id":`, `"\u0069d":`, 1))
	if err := validateEnvelope(escaped); err != nil {
		t.Fatalf("the schema refuses %s: %v", escaped, err)
	}
	got, err := Decode(escaped)
	if err != nil || got.ID != env.ID {
		t.Fatalf("Decode(%s) = %+v, %v", escaped, got, err)
	}
}
