package incus

// InstanceExecPost is the body of POST /1.0/instances/<name>/exec.
type InstanceExecPost struct {
	// Command is the argv to run (no shell is implied).
	Command []string `json:"command"`
	// WaitForWS makes the server wait for websocket clients before running; ExecInstance forces false.
	WaitForWS bool `json:"wait-for-websocket"`
	// Interactive allocates a PTY; ExecInstance forces false because output recording needs pipes.
	Interactive bool `json:"interactive"`
	// Environment adds variables (the server also sets PATH, HOME, USER, LANG when unset).
	Environment map[string]string `json:"environment,omitempty"`
	// Width is the PTY width (interactive only).
	Width int `json:"width,omitempty"`
	// Height is the PTY height (interactive only).
	Height int `json:"height,omitempty"`
	// RecordOutput saves stdout/stderr to log files on the server; ExecInstance forces true.
	RecordOutput bool `json:"record-output"`
	// User is the UID to run as (0 is root).
	User uint32 `json:"user"`
	// Group is the GID to run as (0 is root).
	Group uint32 `json:"group"`
	// Cwd is the working directory (empty means the user's home).
	Cwd string `json:"cwd,omitempty"`
}
