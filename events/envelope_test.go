package events_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
)

func TestNewRejectsPayloadsThatBreakTheSchema(t *testing.T) {
	tests := []struct {
		name    string
		typ     string
		payload any
		field   string // the payload field the error must name
	}{
		{"name starts with a digit", events.TypeLaunch, events.Launch{Name: "1web", Image: "img"}, "/name"},
		{"name with a dot", events.TypeLaunch, events.Launch{Name: "web.1", Image: "img"}, "/name"},
		{"name with a space", events.TypeLaunch, events.Launch{Name: "web 1", Image: "img"}, "/name"},
		{"empty name", events.TypeLaunch, events.Launch{Name: "", Image: "img"}, "/name"},
		{"name too long", events.TypeLaunch, events.Launch{Name: "a" + strings.Repeat("b", 63), Image: "img"}, "/name"},
		{"empty image", events.TypeLaunch, events.Launch{Name: "web", Image: ""}, "/image"},
		{"ipv4 with letters", events.TypeLaunch, events.Launch{Name: "web", Image: "img", IPv4: "10.0.0.x"}, "/ipv4"},
		{"extra field", events.TypeLaunch, map[string]any{"name": "web", "image": "img", "memory": "1G"}, "memory"},
		{"missing image", events.TypeLaunch, map[string]any{"name": "web"}, "image"},
		{"stop of a bad name", events.TypeStop, events.ContainerAction{Name: "-x"}, "/name"},
		{"ping note too long", events.TypePing, events.Ping{Note: strings.Repeat("n", 257)}, "/note"},
		{"event with unknown cause", events.TypeContainerStarted, events.ContainerEvent{Name: "web", Cause: "cron"}, "/cause"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := events.New(tc.typ, "cli", "s1", tc.payload)
			if err == nil {
				t.Fatalf("New accepted %+v: %s", tc.payload, env.Data)
			}
			var ve *events.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T %v is not a *ValidationError", err, err)
			}
			if ve.Type != tc.typ {
				t.Errorf("ValidationError.Type = %q, want %q", ve.Type, tc.typ)
			}
			if !strings.Contains(ve.Reason, tc.field) {
				t.Errorf("reason %q does not name %q", ve.Reason, tc.field)
			}
		})
	}
}

func TestNewRejectsUnknownType(t *testing.T) {
	if _, err := events.New("container.frobnicate", "cli", "s1", map[string]any{}); err == nil {
		t.Fatal("New accepted an unregistered type")
	}
}

func TestNewBuildsAValidEnvelope(t *testing.T) {
	before := time.Now().UTC().Add(-time.Second)
	env, err := events.New(events.TypeLaunch, "cli", "s1", events.Launch{Name: "web-1", Image: "debian", IPv4: "10.77.1.20"})
	if err != nil {
		t.Fatal(err)
	}
	if env.Type != events.TypeLaunch || env.V != 1 || env.Source != "cli" || env.Server != "s1" {
		t.Errorf("envelope header = %+v", env)
	}
	if env.ID == "" || env.Time.Before(before) {
		t.Errorf("envelope id %q time %s", env.ID, env.Time)
	}
	other, err := events.New(events.TypeLaunch, "cli", "s1", events.Launch{Name: "web-1", Image: "debian"})
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == env.ID {
		t.Errorf("two envelopes share id %q", env.ID)
	}
}

func TestRoundTrip(t *testing.T) {
	in := events.Launch{Name: "web-1", Image: "debian/12", IPv4: "10.77.1.20"}
	env, err := events.New(events.TypeLaunch, "cli", "s1", in)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(raw)
	if err != nil {
		t.Fatalf("Decode(%s): %v", raw, err)
	}
	if got.ID != env.ID || got.Type != env.Type || got.V != env.V || got.Source != env.Source || got.Server != env.Server || !got.Time.Equal(env.Time) {
		t.Errorf("decoded header %+v, want %+v", got, env)
	}
	var out events.Launch
	if err := got.Payload(&out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("payload = %+v, want %+v", out, in)
	}
}

// envelope returns a valid raw envelope as a map, for tests to break one field at a time.
func envelope(t *testing.T) map[string]any {
	t.Helper()
	env, err := events.New(events.TypeStop, "cli", "s1", events.ContainerAction{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDecodeRejectsBadEnvelopes(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(m map[string]any)
		wantType string // ValidationError.Type
		want     string // the field the reason must name, or ~ and words it must contain
	}{
		{"missing id", func(m map[string]any) { delete(m, "id") }, "envelope", "id"},
		{"empty id", func(m map[string]any) { m["id"] = "" }, "envelope", "id"},
		{"id with a dot", func(m map[string]any) { m["id"] = "a.b" }, "envelope", "id"},
		{"id too long", func(m map[string]any) { m["id"] = strings.Repeat("a", 161) }, "envelope", "id"},
		{"type with capitals", func(m map[string]any) { m["type"] = "Container.Stop" }, "envelope", "type"},
		{"missing time", func(m map[string]any) { delete(m, "time") }, "envelope", "time"},
		{"missing type", func(m map[string]any) { delete(m, "type") }, "envelope", "type"},
		{"missing source", func(m map[string]any) { delete(m, "source") }, "envelope", "source"},
		{"missing data", func(m map[string]any) { delete(m, "data") }, "envelope", "data"},
		{"version zero", func(m map[string]any) { m["v"] = 0 }, "envelope", "v"},
		{"extra field", func(m map[string]any) { m["priority"] = 1 }, "envelope", "priority"},
		{"unknown type", func(m map[string]any) { m["type"] = "container.frobnicate" }, "container.frobnicate", "~unknown"},
		{"wrong version", func(m map[string]any) { m["v"] = 2 }, events.TypeStop, "~version 2"},
		{"payload breaks its schema", func(m map[string]any) { m["data"] = map[string]any{"name": "1bad"} }, events.TypeStop, "name"},
		{"payload with an extra field", func(m map[string]any) { m["data"] = map[string]any{"name": "web", "now": true} }, events.TypeStop, "now"},
		{"null payload", func(m map[string]any) { m["data"] = nil }, events.TypeStop, "~null"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := envelope(t)
			tc.edit(m)
			raw, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			_, err = events.Decode(raw)
			if err == nil {
				t.Fatalf("Decode accepted %s", raw)
			}
			var ve *events.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T %v is not a *ValidationError", err, err)
			}
			if ve.Type != tc.wantType {
				t.Errorf("ValidationError.Type = %q, want %q (%v)", ve.Type, tc.wantType, err)
			}
			if words, ok := strings.CutPrefix(tc.want, "~"); ok {
				if !strings.Contains(ve.Reason, words) {
					t.Errorf("reason %q does not say %q", ve.Reason, words)
				}
			} else if !namesField(ve.Reason, tc.want) {
				t.Errorf("reason %q does not name %q", ve.Reason, tc.want)
			}
		})
	}
}

// namesField reports whether a validation reason points at field, the way the
// schema validator ("/id", "'id'") or encoding/json ("\"id\"") name one.
func namesField(reason, field string) bool {
	for _, f := range []string{"/" + field, "'" + field + "'", `"` + field + `"`} {
		if strings.Contains(reason, f) {
			return true
		}
	}
	return false
}

func TestDecodeRejectsNonJSON(t *testing.T) {
	for _, raw := range []string{"", "not json", "[]", "null", `{"id":`} {
		if _, err := events.Decode([]byte(raw)); err == nil {
			t.Errorf("Decode(%q) succeeded", raw)
		} else if ve := (*events.ValidationError)(nil); !errors.As(err, &ve) {
			t.Errorf("Decode(%q): %T %v is not a *ValidationError", raw, err, err)
		}
	}
}

func TestValidateOutput(t *testing.T) {
	good, err := json.Marshal(events.Container{Name: "web", Server: "s1", Status: "Running", IPv4: "10.77.1.50", Updated: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cmd     string
		output  string
		wantErr bool
	}{
		{"launch with a container", events.TypeLaunch, string(good), false},
		{"stop with a container", events.TypeStop, string(good), false},
		{"launch missing status", events.TypeLaunch, `{"name":"web","server":"s1","updated":"2024-01-01T00:00:00Z"}`, true},
		{"launch with an extra field", events.TypeLaunch, `{"name":"web","server":"s1","status":"Running","updated":"2024-01-01T00:00:00Z","pid":1}`, true},
		{"launch with a wrong type", events.TypeLaunch, `{"name":"web","server":"s1","status":1,"updated":"2024-01-01T00:00:00Z"}`, true},
		{"delete with a string", events.TypeDelete, `"deleted"`, true},
		{"no output", events.TypeLaunch, ``, false},
		{"not a command", events.TypeContainerStarted, `{"whatever":1}`, false},
		{"unknown command", "container.frobnicate", `{"whatever":1}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := events.ValidateOutput(tc.cmd, []byte(tc.output))
			if (err != nil) != tc.wantErr {
				t.Fatalf("ValidateOutput(%s, %s) = %v, want error %v", tc.cmd, tc.output, err, tc.wantErr)
			}
			if err != nil {
				var ve *events.ValidationError
				if !errors.As(err, &ve) {
					t.Errorf("error %T is not a *ValidationError", err)
				}
			}
		})
	}
}

func TestEveryCommandDeclaresItsOutput(t *testing.T) {
	for _, s := range events.Specs() {
		if s.Kind == events.KindCommand && s.Output == nil {
			t.Errorf("command %s has no output type", s.Type)
		}
		if _, ok := events.Lookup(s.Type); !ok {
			t.Errorf("Specs lists %s but Lookup does not find it", s.Type)
		}
	}
}
