package events

import (
	"encoding/json"
	"reflect"
	"testing"
)

// validateResultSchema walks schemas/result.v1.json, what checkResult replaces.
func validateResultSchema(raw []byte) error {
	spec, _ := Lookup(TypeResult)
	return validatePayload(spec, raw)
}

// TestResultCheckMatchesSchema keeps checkResult equal to
// schemas/result.v1.json: for each mutation both accept or both refuse.
func TestResultCheckMatchesSchema(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{"command": "c1", "command_type": "server.ping", "ok": false,
			"error": map[string]any{"code": "invalid", "message": "bad"}, "output": map[string]any{"server": "s1"}}
	}
	cases := map[string]func(m map[string]any){
		"valid":               func(m map[string]any) {},
		"no error":            func(m map[string]any) { delete(m, "error") },
		"no output":           func(m map[string]any) { delete(m, "output") },
		"null output":         func(m map[string]any) { m["output"] = nil },
		"string output":       func(m map[string]any) { m["output"] = "x" },
		"no command":          func(m map[string]any) { delete(m, "command") },
		"no command_type":     func(m map[string]any) { delete(m, "command_type") },
		"no ok":               func(m map[string]any) { delete(m, "ok") },
		"null command":        func(m map[string]any) { m["command"] = nil },
		"number command":      func(m map[string]any) { m["command"] = 1 },
		"empty command":       func(m map[string]any) { m["command"] = "" },
		"null ok":             func(m map[string]any) { m["ok"] = nil },
		"string ok":           func(m map[string]any) { m["ok"] = "true" },
		"true ok":             func(m map[string]any) { m["ok"] = true },
		"number ok":           func(m map[string]any) { m["ok"] = 1 },
		"null error":          func(m map[string]any) { m["error"] = nil },
		"string error":        func(m map[string]any) { m["error"] = "bad" },
		"error without code":  func(m map[string]any) { delete(m["error"].(map[string]any), "code") },
		"error without text":  func(m map[string]any) { delete(m["error"].(map[string]any), "message") },
		"error code unknown":  func(m map[string]any) { m["error"].(map[string]any)["code"] = "oops" },
		"error code null":     func(m map[string]any) { m["error"].(map[string]any)["code"] = nil },
		"error message null":  func(m map[string]any) { m["error"].(map[string]any)["message"] = nil },
		"error extra field":   func(m map[string]any) { m["error"].(map[string]any)["at"] = "x" },
		"error code timeout":  func(m map[string]any) { m["error"].(map[string]any)["code"] = "timeout" },
		"extra field":         func(m map[string]any) { m["priority"] = 1 },
		"upper-case key":      func(m map[string]any) { m["Command"] = m["command"]; delete(m, "command") },
		"escaped key":         func(m map[string]any) { m["comm\u00e4nd"] = "x" },
		"unicode command":     func(m map[string]any) { m["command"] = "ä\"\\" },
		"nested output":       func(m map[string]any) { m["output"] = []any{1, map[string]any{"a": nil}} },
		"message with escape": func(m map[string]any) { m["error"].(map[string]any)["message"] = "a\nb\u0001" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := base()
			mutate(m)
			raw, _ := json.Marshal(m)
			agree(t, raw)
		})
	}
	for _, raw := range []string{`[]`, `"x"`, `null`, `1`, `{}`} {
		agree(t, []byte(raw))
	}
}

// agree fails unless checkResult and the schema both accept raw or both
// refuse it, and an accepted result decodes as encoding/json decodes it.
func agree(t *testing.T, raw []byte) {
	t.Helper()
	schemaErr := validateResultSchema(raw)
	res, goErr := checkResult(raw)
	if (schemaErr == nil) != (goErr == nil) {
		t.Fatalf("%s: schema says %v, checkResult says %v", raw, schemaErr, goErr)
	}
	if goErr != nil {
		return
	}
	var want Result
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	if !reflect.DeepEqual(*res, want) {
		t.Fatalf("%s: decoded %+v, want %+v", raw, *res, want)
	}
}

// Any valid JSON is accepted or refused by checkResult as by the schema.
func FuzzResultCheck(f *testing.F) {
	f.Add(`{"command":"c1","command_type":"server.ping","ok":true,"output":{"server":"s1"}}`)
	f.Add(`{"command":"c1","command_type":"x","ok":false,"error":{"code":"conflict","message":"m"}}`)
	f.Add(`{"comm\u0061nd":"c","command_type":"x","ok":true,"ok":1}`)
	f.Add(`{"command":"c","command_type":"x","ok":true,"error":{"code":"invalid","message":"a","code":"x"}}`)
	f.Fuzz(func(t *testing.T, s string) {
		if raw := []byte(s); json.Valid(raw) {
			agree(t, raw)
		}
	})
}
