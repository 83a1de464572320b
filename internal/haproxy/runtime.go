// Package haproxy speaks haproxy's runtime API (the stats socket in admin mode),
// the zero-drop path for backend changes: no reload, no connection lost.
package haproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Client talks to one haproxy's admin socket.
type Client struct {
	// Socket is the unix socket path.
	Socket string
}

// Command runs one runtime API command and returns haproxy's answer. The
// connection is not half-closed after the command: haproxy then answers nothing.
func (c Client) Command(ctx context.Context, cmd string) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return "", fmt.Errorf("haproxy socket %s: %w", c.Socket, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", err
	}
	out, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// Do runs a command that answers nothing on success (or only a "done"-like
// line); anything else is haproxy's refusal.
func (c Client) Do(ctx context.Context, cmd string, okPrefixes ...string) error {
	out, err := c.Command(ctx, cmd)
	if err != nil {
		return err
	}
	if out == "" {
		return nil
	}
	for _, p := range okPrefixes {
		if strings.HasPrefix(out, p) {
			return nil
		}
	}
	return fmt.Errorf("haproxy: %s: %s", cmd, out)
}

// AddServer adds a server to a backend and puts it in service with its health check.
func (c Client) AddServer(ctx context.Context, backend, name, addr string, port int) error {
	if err := c.Do(ctx, fmt.Sprintf("add server %s/%s %s:%d check inter 1s fall 2 rise 1", backend, name, addr, port), "New server registered"); err != nil {
		return err
	}
	if err := c.Do(ctx, fmt.Sprintf("enable health %s/%s", backend, name)); err != nil {
		return err
	}
	return c.Do(ctx, fmt.Sprintf("enable server %s/%s", backend, name))
}

// RemoveServer drains a server (no new requests; those in flight finish), then
// deletes it once it has no connection left, within the context's deadline.
func (c Client) RemoveServer(ctx context.Context, backend, name string) error {
	if err := c.Do(ctx, fmt.Sprintf("disable server %s/%s", backend, name)); err != nil {
		return err
	}
	for {
		cur, err := c.currentSessions(ctx, backend, name)
		if err != nil {
			return err
		}
		if cur == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("haproxy: %s/%s still has %d connections", backend, name, cur)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return c.Do(ctx, fmt.Sprintf("del server %s/%s", backend, name), "Server deleted")
}

// currentSessions reads scur of one server from "show stat".
func (c Client) currentSessions(ctx context.Context, backend, name string) (int, error) {
	out, err := c.Command(ctx, "show stat")
	if err != nil {
		return 0, err
	}
	lines := strings.Split(out, "\n")
	if len(lines) == 0 {
		return 0, fmt.Errorf("haproxy: empty show stat")
	}
	header := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	col := -1
	for i, h := range header {
		if h == "scur" {
			col = i
		}
	}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) > col && col >= 0 && f[0] == backend && f[1] == name {
			return strconv.Atoi(f[col])
		}
	}
	return 0, nil
}

// Server is one server of a backend as haproxy runs it.
type Server struct {
	// Name is the server's name.
	Name string
	// Addr is its address.
	Addr string
	// State is up, down, starting or stopping (its operational state), or
	// maint or drain when an administrator (or skein, removing it) set it so.
	State string
}

// opStates name "show servers state"'s srv_op_state.
var opStates = map[string]string{"0": "down", "1": "starting", "2": "up", "3": "stopping"}

// serverState is a server's state from srv_op_state and srv_admin_state
// (a bit field: 0x08 is drain, the others are maintenance).
func serverState(op, admin string) string {
	a, err := strconv.Atoi(admin)
	switch {
	case err == nil && a&^0x08 != 0:
		return "maint"
	case err == nil && a&0x08 != 0:
		return "drain"
	}
	if s, ok := opStates[op]; ok {
		return s
	}
	return "unknown"
}

// Servers lists the servers of a backend as haproxy runs them ("show servers
// state"), whatever its configuration file says.
func (c Client) Servers(ctx context.Context, backend string) ([]Server, error) {
	out, err := c.Command(ctx, "show servers state "+backend)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(out, "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "1" {
		return nil, fmt.Errorf("haproxy: show servers state %s: %s", backend, out)
	}
	var servers []Server
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 5 || strings.HasPrefix(f[0], "#") || f[1] != backend {
			continue
		}
		st := "unknown"
		if len(f) >= 7 {
			st = serverState(f[5], f[6])
		}
		servers = append(servers, Server{Name: f[3], Addr: f[4], State: st})
	}
	return servers, nil
}

// Sessions is how many connections the servers of a backend hold now.
func (c Client) Sessions(ctx context.Context, backend string) (int, error) {
	out, err := c.Command(ctx, "show stat")
	if err != nil {
		return 0, err
	}
	lines := strings.Split(out, "\n")
	header := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	col := -1
	for i, h := range header {
		if h == "scur" {
			col = i
		}
	}
	if col < 0 {
		return 0, fmt.Errorf("haproxy: show stat without scur: %s", lines[0])
	}
	total := 0
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) > col && f[0] == backend && f[1] != "BACKEND" && f[1] != "FRONTEND" {
			n, _ := strconv.Atoi(f[col])
			total += n
		}
	}
	return total, nil
}
