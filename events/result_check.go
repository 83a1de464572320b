package events

import (
	"errors"
	"slices"
)

// errorCodes are the codes schemas/result.v1.json allows in a result's error.
var errorCodes = []string{"invalid", "not_found", "conflict", "unavailable", "timeout", "internal"}

// checkResult applies schemas/result.v1.json to a result's payload in Go and
// decodes it in the same pass: every command ends with a result, and the
// schema walk (a decode into any, then the walk) cost as much again as the
// decode itself. TestResultCheckMatchesSchema keeps the two equal.
func checkResult(data []byte) (*Result, error) {
	bad := func(why string) error { return &ValidationError{Type: TypeResult, Reason: why} }
	fields, err := members(data)
	if err != nil {
		return nil, bad(err.Error())
	}
	var res Result
	for k, v := range fields {
		switch k {
		case "command":
			res.Command, err = jsonString(v)
		case "command_type":
			res.CommandType, err = jsonString(v)
		case "ok":
			res.OK, err = jsonBool(v)
		case "error":
			res.Error, err = checkErrorInfo(v)
		case "output":
			res.Output = v
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return nil, bad("/" + k + ": " + err.Error())
		}
	}
	for _, k := range []string{"command", "command_type", "ok"} {
		if _, ok := fields[k]; !ok {
			return nil, bad("/" + k + ": missing")
		}
	}
	return &res, nil
}

// checkErrorInfo applies the schema of a result's error.
func checkErrorInfo(v []byte) (*ErrorInfo, error) {
	fields, err := members(v)
	if err != nil {
		return nil, err
	}
	var e ErrorInfo
	for k, v := range fields {
		switch k {
		case "code":
			if e.Code, err = jsonString(v); err == nil && !slices.Contains(errorCodes, e.Code) {
				err = errors.New("not one of the error codes")
			}
		case "message":
			e.Message, err = jsonString(v)
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return nil, errors.New(k + ": " + err.Error())
		}
	}
	for _, k := range []string{"code", "message"} {
		if _, ok := fields[k]; !ok {
			return nil, errors.New(k + ": missing")
		}
	}
	return &e, nil
}

// jsonString decodes a JSON string, and nothing else (not null).
func jsonString(v []byte) (string, error) {
	if len(v) == 0 || v[0] != '"' {
		return "", errors.New("want a string")
	}
	return quickString(v)
}

// jsonBool decodes a JSON boolean, and nothing else.
func jsonBool(v []byte) (bool, error) {
	switch string(v) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errors.New("want a boolean")
}
