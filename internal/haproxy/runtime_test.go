package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is one server of a backend in the fake haproxy.
type fakeServer struct {
	addr  string
	check bool // "check" was given: a health check is configured
	maint bool // in maintenance (disable server); dynamic servers start here
	// health is true once "enable health" started the configured check.
	health bool
	// scur is its current sessions; while in maintenance, each "show stat"
	// finishes one of them unless stuck is set.
	scur  int
	stuck bool
}

// fakeHAProxy is a haproxy 2.6 admin socket in a temp dir: it reads one
// command line per connection and answers as haproxy's CLI does, then closes.
type fakeHAProxy struct {
	sock string

	mu         sync.Mutex
	backends   map[string]map[string]*fakeServer
	cmds       []string // every command received, in order
	halfClosed int      // connections whose client shut its write side before the answer
	silent     bool     // read commands but never answer (a hung haproxy)
}

// halfCloseProbe is how long the fake watches for the client's shutdown after
// the command line before answering; haproxy answers nothing once it sees it.
const halfCloseProbe = 30 * time.Millisecond

// newFakeHAProxy starts a fake admin socket with the backends "be" and "other"
// (both empty) and stops it when the test ends.
func newFakeHAProxy(t *testing.T) *fakeHAProxy {
	t.Helper()
	f := &fakeHAProxy{
		sock:     filepath.Join(t.TempDir(), "admin.sock"),
		backends: map[string]map[string]*fakeServer{"be": {}, "other": {}},
	}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.serve(conn, done)
			}()
		}
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	return f
}

// client returns a Client of the fake's socket.
func (f *fakeHAProxy) client() Client { return Client{Socket: f.sock} }

// serve answers the one command of conn, or nothing when the client half-closed.
func (f *fakeHAProxy) serve(conn net.Conn, done <-chan struct{}) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	cmd := strings.TrimSpace(line)
	f.mu.Lock()
	f.cmds = append(f.cmds, cmd)
	silent := f.silent
	f.mu.Unlock()
	if silent {
		<-done
		return
	}
	// haproxy gives nothing to a client that shut down its write side.
	_ = conn.SetReadDeadline(time.Now().Add(halfCloseProbe))
	if _, err := r.ReadByte(); errors.Is(err, io.EOF) {
		f.mu.Lock()
		f.halfClosed++
		f.mu.Unlock()
		return
	}
	f.mu.Lock()
	out := f.exec(cmd)
	f.mu.Unlock()
	// Every answer of haproxy's CLI ends with an empty line.
	_, _ = io.WriteString(conn, out+"\n")
}

// exec runs one command on the fake's state (f.mu held) and returns haproxy 2.6's answer.
func (f *fakeHAProxy) exec(cmd string) string {
	w := strings.Fields(cmd)
	switch {
	case len(w) >= 2 && w[0] == "show" && w[1] == "stat":
		return f.showStat()
	case len(w) == 4 && w[0] == "show" && w[1] == "servers" && w[2] == "state":
		return f.showServersState(w[3])
	case len(w) >= 3 && w[0] == "add" && w[1] == "server":
		be, name, ok := strings.Cut(w[2], "/")
		if !ok {
			return "Require 'backend/server'."
		}
		srvs, ok := f.backends[be]
		if !ok {
			return "No such backend."
		}
		if _, dup := srvs[name]; dup {
			return "Already exists a server with the same name in backend."
		}
		if len(w) < 4 {
			return "'server' expects <name> and <addr>[:<port>] as arguments."
		}
		s := &fakeServer{addr: w[3], maint: true}
		for _, o := range w[4:] {
			if o == "check" {
				s.check = true
			}
		}
		srvs[name] = s
		return "New server registered."
	case len(w) == 3 && (w[0] == "enable" || w[0] == "disable") && (w[1] == "server" || w[1] == "health"):
		s, refusal := f.find(w[2])
		if s == nil {
			return refusal
		}
		switch {
		case w[1] == "server":
			s.maint = w[0] == "disable"
		case !s.check:
			return "Health checks are not configured on this server, cannot " + w[0] + "."
		default:
			s.health = w[0] == "enable"
		}
		return ""
	case len(w) == 3 && w[0] == "del" && w[1] == "server":
		s, refusal := f.find(w[2])
		if s == nil {
			return refusal
		}
		if !s.maint {
			return "Only servers in maintenance mode can be deleted."
		}
		if s.scur > 0 {
			return "Server still has connections attached to it, cannot remove it."
		}
		be, name, _ := strings.Cut(w[2], "/")
		delete(f.backends[be], name)
		return "Server deleted."
	}
	return "Unknown command: '" + cmd + "'\n\nThe following commands are valid at this level:\n  help           : full commands list"
}

// find resolves "backend/server" as haproxy does, with its refusal when it cannot.
func (f *fakeHAProxy) find(arg string) (*fakeServer, string) {
	be, name, ok := strings.Cut(arg, "/")
	if !ok {
		return nil, "Require 'backend/server'."
	}
	srvs, ok := f.backends[be]
	if !ok {
		return nil, "No such backend."
	}
	s, ok := srvs[name]
	if !ok {
		return nil, "No such server."
	}
	return s, ""
}

// showStat renders "show stat" CSV (first columns as haproxy orders them) and
// lets one session of each drained server finish.
func (f *fakeHAProxy) showStat() string {
	var b strings.Builder
	b.WriteString("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,\n")
	b.WriteString("fe,FRONTEND,,,0,1,2000,1,0,0,0,0,0,,,,,OPEN,,\n")
	bes := make([]string, 0, len(f.backends))
	for be := range f.backends {
		bes = append(bes, be)
	}
	sort.Strings(bes)
	for _, be := range bes {
		names := make([]string, 0, len(f.backends[be]))
		for n := range f.backends[be] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			s := f.backends[be][n]
			status := "UP"
			if s.maint {
				status = "MAINT"
			}
			fmt.Fprintf(&b, "%s,%s,0,0,%d,%d,,%d,0,0,,0,,0,0,0,0,%s,1,\n", be, n, s.scur, s.scur, s.scur, status)
			if s.maint && !s.stuck && s.scur > 0 {
				s.scur--
			}
		}
		fmt.Fprintf(&b, "%s,BACKEND,0,0,0,0,200,0,0,0,0,0,,0,0,0,0,UP,%d,\n", be, len(names))
	}
	return b.String()
}

// showServersState renders "show servers state BACKEND" as haproxy 2.6 does
// (version line, header, one line per server; ids made up).
func (f *fakeHAProxy) showServersState(be string) string {
	srvs, ok := f.backends[be]
	if !ok {
		return "Can't find backend."
	}
	var b strings.Builder
	b.WriteString("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n")
	names := make([]string, 0, len(srvs))
	for n := range srvs {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		host, port, _ := strings.Cut(srvs[n].addr, ":")
		admin := 0
		if srvs[n].maint {
			admin = 1
		}
		fmt.Fprintf(&b, "3 %s %d %s %s 2 %d 1 1 5 6 3 4 6 0 0 0 - %s - 0 0 - - 0\n", be, i+1, n, host, admin, port)
	}
	return b.String()
}

// halfClosedConns returns how many clients shut their write side before the answer.
func (f *fakeHAProxy) halfClosedConns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.halfClosed
}

// commands returns the commands received so far.
func (f *fakeHAProxy) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

// server returns a copy of backend/name's state, or nil when it does not exist.
func (f *fakeHAProxy) server(backend, name string) *fakeServer {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.backends[backend][name]
	if !ok {
		return nil
	}
	c := *s
	return &c
}

// put adds a server to the fake as the configuration would.
func (f *fakeHAProxy) put(backend, name string, s fakeServer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.backends[backend][name] = &s
}

// testCtx is a context that ends with the test or after d.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// The fake must give nothing to a half-closing client, or the test of Command's
// connection handling below proves nothing.
func TestFakeAnswersNothingAfterHalfClose(t *testing.T) {
	f := newFakeHAProxy(t)
	conn, err := net.Dial("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "show stat\n"); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	out, err := io.ReadAll(conn)
	if err != nil || len(out) != 0 {
		t.Fatalf("half-closed client got %q, %v; want nothing", out, err)
	}
}

func TestCommandReturnsTheWholeAnswerWithoutHalfClosing(t *testing.T) {
	f := newFakeHAProxy(t)
	f.put("be", "web1", fakeServer{addr: "10.0.0.5:80", scur: 2})
	out, err := f.client().Command(testCtx(t, 5*time.Second), "show stat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "# pxname,svname,") {
		t.Errorf("first line %q, want the CSV header", lines[0])
	}
	if last := lines[len(lines)-1]; last != "other,BACKEND,0,0,0,0,200,0,0,0,0,0,,0,0,0,0,UP,0," {
		t.Errorf("last line %q: answer cut or not trimmed", last)
	}
	if !strings.Contains(out, "\nbe,web1,0,0,2,") {
		t.Errorf("answer lacks be/web1's row:\n%s", out)
	}
	if n := f.halfClosedConns(); n != 0 {
		t.Errorf("client half-closed %d connections", n)
	}
}

func TestCommandNoSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "missing.sock")
	_, err := Client{Socket: sock}.Command(testCtx(t, 5*time.Second), "show stat")
	if err == nil || !strings.Contains(err.Error(), sock) {
		t.Fatalf("err = %v, want one naming %s", err, sock)
	}
}

func TestCommandHonoursDeadline(t *testing.T) {
	f := newFakeHAProxy(t)
	f.silent = true
	const wait = 200 * time.Millisecond
	start := time.Now()
	_, err := f.client().Command(testCtx(t, wait), "show stat")
	elapsed := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", err)
	}
	// Command's own cap is 5 s: returning well before it means ctx's deadline ruled.
	if elapsed > 2*time.Second {
		t.Errorf("returned after %s, ctx deadline was %s", elapsed, wait)
	}
}

func TestDo(t *testing.T) {
	tests := []struct {
		name    string
		cmd     string
		ok      []string
		wantErr string // "" for success
	}{
		{name: "empty answer", cmd: "disable server be/web1"},
		{name: "ok prefix", cmd: "del server be/gone", ok: []string{"Server deleted"}},
		{name: "refusal", cmd: "disable server be/nope", wantErr: "haproxy: disable server be/nope: No such server."},
		{name: "answer not among ok prefixes", cmd: "del server be/web1", ok: []string{"Server deleted"},
			wantErr: "haproxy: del server be/web1: Only servers in maintenance mode can be deleted."},
		{name: "unknown command", cmd: "frobnicate", wantErr: "Unknown command: 'frobnicate'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHAProxy(t)
			f.put("be", "web1", fakeServer{addr: "10.0.0.5:80"})
			f.put("be", "gone", fakeServer{addr: "10.0.0.6:80", maint: true})
			err := f.client().Do(testCtx(t, 5*time.Second), tt.cmd, tt.ok...)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("err = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAddServer(t *testing.T) {
	f := newFakeHAProxy(t)
	if err := f.client().AddServer(testCtx(t, 5*time.Second), "be", "web1", "10.0.0.5", 8080); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"add server be/web1 10.0.0.5:8080 check inter 1s fall 2 rise 1",
		"enable health be/web1",
		"enable server be/web1",
	}
	if got := f.commands(); !slices.Equal(got, want) {
		t.Errorf("commands\n got %q\nwant %q", got, want)
	}
	s := f.server("be", "web1")
	if s == nil || s.addr != "10.0.0.5:8080" || s.maint || !s.health {
		t.Fatalf("server after AddServer: %+v; want 10.0.0.5:8080 in service with its check running", s)
	}
}

func TestAddServerRefused(t *testing.T) {
	tests := []struct {
		name, backend, wantErr string
	}{
		{name: "no such backend", backend: "nope", wantErr: "No such backend."},
		{name: "name taken", backend: "be", wantErr: "Already exists a server with the same name in backend."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHAProxy(t)
			f.put("be", "web1", fakeServer{addr: "10.0.0.9:80"})
			err := f.client().AddServer(testCtx(t, 5*time.Second), tt.backend, "web1", "10.0.0.5", 8080)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want haproxy's %q", err, tt.wantErr)
			}
			if got := f.commands(); len(got) != 1 {
				t.Errorf("commands after the refusal: %q, want only the add", got)
			}
			if s := f.server("be", "web1"); s == nil || s.addr != "10.0.0.9:80" || s.maint {
				t.Errorf("existing server changed: %+v", s)
			}
		})
	}
}

func TestRemoveServerDrainsThenDeletes(t *testing.T) {
	f := newFakeHAProxy(t)
	f.put("be", "web1", fakeServer{addr: "10.0.0.5:80", check: true, health: true, scur: 3})
	// Same name in another backend, with sessions that never end: not ours to wait for.
	f.put("other", "web1", fakeServer{addr: "10.0.0.7:80", scur: 5, stuck: true})
	if err := f.client().RemoveServer(testCtx(t, 5*time.Second), "be", "web1"); err != nil {
		t.Fatal(err)
	}
	cmds := f.commands()
	if len(cmds) < 3 || cmds[0] != "disable server be/web1" || cmds[len(cmds)-1] != "del server be/web1" {
		t.Fatalf("commands %q: want disable first, del last", cmds)
	}
	// The fake refuses del while sessions remain, so success means it waited for them.
	for _, c := range cmds[1 : len(cmds)-1] {
		if c != "show stat" {
			t.Errorf("unexpected command %q while draining", c)
		}
	}
	if f.server("be", "web1") != nil {
		t.Error("be/web1 still exists")
	}
	if f.server("other", "web1") == nil {
		t.Error("other/web1 was removed")
	}
}

func TestRemoveServerRefused(t *testing.T) {
	f := newFakeHAProxy(t)
	err := f.client().RemoveServer(testCtx(t, 5*time.Second), "be", "nope")
	if err == nil || !strings.Contains(err.Error(), "No such server.") {
		t.Fatalf("err = %v, want haproxy's refusal", err)
	}
	if got := f.commands(); len(got) != 1 {
		t.Errorf("commands after the refusal: %q, want only the disable", got)
	}
}

func TestRemoveServerStuckConnections(t *testing.T) {
	f := newFakeHAProxy(t)
	f.put("be", "web1", fakeServer{addr: "10.0.0.5:80", scur: 3, stuck: true})
	const wait = 300 * time.Millisecond
	start := time.Now()
	err := f.client().RemoveServer(testCtx(t, wait), "be", "web1")
	// The deadline may strike between two looks or during one.
	if err == nil {
		t.Fatal("RemoveServer succeeded with connections left")
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("returned after %s, ctx deadline was %s", elapsed, wait)
	}
	for _, c := range f.commands() {
		if strings.HasPrefix(c, "del server") {
			t.Errorf("sent %q with connections left", c)
		}
	}
	if s := f.server("be", "web1"); s == nil || !s.maint {
		t.Errorf("be/web1 after the timeout: %+v, want it kept in maintenance", s)
	}
}

// TestServersAndSessionsReadWhatRuns: the servers haproxy runs in a backend
// (show servers state) and the connections they hold (show stat), other
// backends and the FRONTEND/BACKEND rows left out.
func TestServersAndSessionsReadWhatRuns(t *testing.T) {
	f := newFakeHAProxy(t)
	f.put("be", "web1", fakeServer{addr: "10.77.1.5:80", scur: 2})
	f.put("be", "web2", fakeServer{addr: "10.77.2.6:8080", scur: 1, maint: true})
	f.put("other", "x", fakeServer{addr: "10.77.3.7:80", scur: 5})
	ctx := testCtx(t, 5*time.Second)
	got, err := f.client().Servers(ctx, "be")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[{web1 10.77.1.5 up} {web2 10.77.2.6 maint}]" {
		t.Errorf("Servers(be) = %v", got)
	}
	if _, err := f.client().Servers(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "Can't find backend") {
		t.Errorf("Servers of a missing backend = %v, want haproxy's refusal", err)
	}
	n, err := f.client().Sessions(ctx, "be")
	if err != nil || n != 3 {
		t.Errorf("Sessions(be) = %d %v, want 3", n, err)
	}
}

// TestServerState: srv_op_state and srv_admin_state as a state a person reads.
func TestServerState(t *testing.T) {
	for _, tc := range []struct{ op, admin, want string }{
		{"2", "0", "up"}, {"0", "0", "down"}, {"1", "0", "starting"}, {"3", "0", "stopping"},
		{"2", "1", "maint"}, {"2", "32", "maint"}, {"2", "8", "drain"}, {"0", "9", "maint"}, {"7", "0", "unknown"},
	} {
		if got := serverState(tc.op, tc.admin); got != tc.want {
			t.Errorf("serverState(%s, %s) = %s, want %s", tc.op, tc.admin, got, tc.want)
		}
	}
}
