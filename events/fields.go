package events

import (
	"bytes"
	"encoding/json"
	"errors"
)

// errSlowPath sends a message the fast splitter does not handle (escaped
// keys) to encoding/json.
var errSlowPath = errors.New("slow path")

// topFields splits a JSON object (already known valid) into its members'
// raw values, keys compared exactly as written. It handles what skein writes;
// a key with an escape goes the slow way.
func topFields(raw []byte) (map[string]json.RawMessage, error) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, errors.New("not a JSON object")
	}
	out := make(map[string]json.RawMessage, 8)
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return out, nil
	}
	for i < len(raw) {
		if raw[i] != '"' {
			return nil, errors.New("bad object")
		}
		end := bytes.IndexByte(raw[i+1:], '"')
		if end < 0 {
			return nil, errors.New("bad key")
		}
		key := raw[i+1 : i+1+end]
		for _, c := range key {
			// Escapes and non-ASCII (encoding/json rewrites bad UTF-8) go the slow way.
			if c == '\\' || c >= 0x80 {
				return nil, errSlowPath
			}
		}
		i = skipSpace(raw, i+end+2)
		if i >= len(raw) || raw[i] != ':' {
			return nil, errors.New("bad member")
		}
		i = skipSpace(raw, i+1)
		vEnd, err := valueEnd(raw, i)
		if err != nil {
			return nil, err
		}
		out[string(key)] = raw[i:vEnd]
		i = skipSpace(raw, vEnd)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
			continue
		}
		if i < len(raw) && raw[i] == '}' {
			return out, nil
		}
		return nil, errors.New("bad object")
	}
	return nil, errors.New("unterminated object")
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd is the index just past the JSON value starting at i.
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("missing value")
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, err := stringEnd(b, j)
				if err != nil {
					return 0, err
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errors.New("unterminated value")
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ' ' && b[j] != '\n' && b[j] != '\t' && b[j] != '\r' {
			j++
		}
		return j, nil
	}
}

// stringEnd is the index just past the string starting at i.
func stringEnd(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("unterminated string")
}

// members splits a valid JSON object into its members, keys exactly as written.
func members(v []byte) (map[string]json.RawMessage, error) {
	fields, err := topFields(v)
	if errors.Is(err, errSlowPath) {
		err = json.Unmarshal(v, &fields)
	}
	return fields, err
}
