package incus

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// createInstance creates and completes an instance in the fake, going through the real wait loop.
func createInstance(t *testing.T, ctx context.Context, f *fakeIncus, c *Client, name string) {
	t.Helper()
	op, err := c.CreateInstance(ctx, InstancesPost{Name: name, Source: InstanceSource{Type: "image", Alias: "skein-busybox"}})
	if err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	f.completeCreate(op.ID(), "")
	if err := op.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func TestServerAndProject(t *testing.T) {
	ctx := testCtx(t)
	f := newFakeIncus(t)
	c := f.client()
	s, err := c.GetServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.APIVersion != "1.0" || s.Environment.ServerVersion != "6.0.4" || s.Environment.Project != "default" {
		t.Fatalf("unexpected server %+v", s)
	}
	p := c.WithProject("skein-s1")
	if p.Project() != "skein-s1" || c.Project() != "" {
		t.Fatalf("WithProject must copy: %q %q", p.Project(), c.Project())
	}
	s, err = p.GetServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Environment.Project != "skein-s1" {
		t.Fatalf("project not sent: %+v", s.Environment)
	}
}

func TestInstanceLifecycle(t *testing.T) {
	ctx := testCtx(t)
	f := newFakeIncus(t)
	c := f.client().WithProject("skein-s1")

	req := InstancesPost{
		Name:   "c1",
		Source: InstanceSource{Type: "image", Alias: "skein-busybox"},
		InstancePut: InstancePut{
			Profiles: []string{},
			Devices: map[string]map[string]string{
				"root": {"type": "disk", "path": "/", "pool": "skein"},
				"eth0": {"type": "nic", "network": "skeinbr1", "name": "eth0"},
			},
		},
	}
	op, err := c.CreateInstance(ctx, req)
	if err != nil {
		t.Fatalf("CreateInstance: %v", err)
	}
	if got := op.Get(); got.StatusCode != Running || got.Description != "Creating instance" {
		t.Fatalf("initial operation %+v", got)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- op.Wait(ctx) }()
	// The first wait is answered as an expired server-side timeout; the second is a blocked long poll.
	for range 2 {
		if id := <-f.waitCalls; id != op.ID() {
			t.Fatalf("wait for %q, want %q", id, op.ID())
		}
	}
	f.completeCreate(op.ID(), "")
	if err := <-waitErr; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if op.Get().StatusCode != Success {
		t.Fatalf("final operation %+v", op.Get())
	}

	again, err := c.GetOperation(ctx, op.ID())
	if err != nil || again.Get().StatusCode != Success {
		t.Fatalf("GetOperation: %v %+v", err, again)
	}

	inst, etag, err := c.GetInstance(ctx, "c1")
	if err != nil {
		t.Fatalf("GetInstance: %v", err)
	}
	if inst.Status != "Stopped" || inst.IsRunning() || etag == "" {
		t.Fatalf("instance %+v etag %q", inst, etag)
	}
	if inst.Profiles == nil || len(inst.Profiles) != 0 || inst.Devices["eth0"]["network"] != "skeinbr1" {
		t.Fatalf("profiles/devices not round-tripped: %+v", inst.InstancePut)
	}

	put := inst.Writable()
	put.Description = "updated"
	uop, err := c.UpdateInstance(ctx, "c1", put, etag)
	if err != nil {
		t.Fatalf("UpdateInstance: %v", err)
	}
	if err := uop.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateInstance(ctx, "c1", put, etag); !IsPreconditionFailed(err) {
		t.Fatalf("stale etag: want 412, got %v", err)
	}

	sop, err := c.UpdateInstanceState(ctx, "c1", InstanceStatePut{Action: ActionStart, Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := sop.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.GetInstanceState(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if st.StatusCode != Running || st.Network["eth0"].Addresses[0].Address != "10.77.1.10" {
		t.Fatalf("state %+v", st)
	}
	full, err := c.GetInstanceFull(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if full.Name != "c1" || full.State == nil || full.State.StatusCode != Running || full.State.Network["eth0"].Addresses[0].Address != "10.77.1.10" {
		t.Fatalf("GetInstanceFull %+v", full)
	}
	list, err := c.GetInstances(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "c1" || list[0].State.StatusCode != Running || list[0].Description != "updated" {
		t.Fatalf("GetInstances: %v %+v", err, list)
	}
	if other, err := f.client().GetInstances(ctx); err != nil || len(other) != 0 {
		t.Fatalf("default project should be empty: %v %+v", err, other)
	}

	res, err := c.ExecInstance(ctx, "c1", InstanceExecPost{Command: []string{"echo", "hello", "world"}})
	if err != nil {
		t.Fatalf("ExecInstance: %v", err)
	}
	if res.ExitCode != 0 || string(res.Stdout) != "hello world\n" || len(res.Stderr) != 0 {
		t.Fatalf("exec result %+v", res)
	}
	res, err = c.ExecInstance(ctx, "c1", InstanceExecPost{Command: []string{"fail"}})
	if err != nil {
		t.Fatalf("ExecInstance: %v", err)
	}
	if res.ExitCode != 3 || string(res.Stderr) != "boom\n" {
		t.Fatalf("exec result %+v", res)
	}
	// The logs are deleted after the answer, in the background.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		f.mu.Lock()
		leftover := len(f.logs)
		f.mu.Unlock()
		if leftover == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exec logs not deleted: %d left", leftover)
		}
	}

	// Content that looks like an error envelope must come back verbatim.
	content := `{"type":"error","error":"not really","error_code":500}`
	err = c.CreateInstanceFile(ctx, "c1", "/etc/skein.json", InstanceFileArgs{Content: strings.NewReader(content), UID: 1000, GID: 1001, Mode: 0o640})
	if err != nil {
		t.Fatalf("CreateInstanceFile: %v", err)
	}
	f.mu.Lock()
	hdr := f.files["c1:/etc/skein.json"].header
	f.mu.Unlock()
	if hdr.Get("X-Incus-mode") != "0640" || hdr.Get("X-Incus-uid") != "1000" || hdr.Get("X-Incus-gid") != "1001" || hdr.Get("X-Incus-type") != "" {
		t.Fatalf("file headers %v", hdr)
	}
	got, err := c.GetInstanceFile(ctx, "c1", "/etc/skein.json")
	if err != nil || string(got) != content {
		t.Fatalf("GetInstanceFile: %v %q", err, got)
	}
	if _, err := c.GetInstanceFile(ctx, "c1", "/etc"); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("directory read: want error, got %v", err)
	}
	if _, err := c.GetInstanceFile(ctx, "c1", "/nope"); !IsNotFound(err) {
		t.Fatalf("missing file: want 404, got %v", err)
	}
	rc, size, err := c.GetInstanceFileReader(ctx, "c1", "/etc/skein.json")
	if err != nil {
		t.Fatalf("GetInstanceFileReader: %v", err)
	}
	streamed, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(streamed) != content || size != int64(len(content)) {
		t.Fatalf("GetInstanceFileReader: %v %q size %d", err, streamed, size)
	}
	if _, _, err := c.GetInstanceFileReader(ctx, "c1", "/etc"); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("directory read: want error, got %v", err)
	}
	if _, _, err := c.GetInstanceFileReader(ctx, "c1", "/etc/link"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("symlink read: want error, got %v", err)
	}
	if _, _, err := c.GetInstanceFileReader(ctx, "c1", "/nope"); !IsNotFound(err) {
		t.Fatalf("missing file: want 404, got %v", err)
	}

	if _, err := c.DeleteInstance(ctx, "c1"); err == nil || !HasStatus(err, http.StatusBadRequest) {
		t.Fatalf("deleting a running instance: want 400, got %v", err)
	}
	stop, err := c.UpdateInstanceState(ctx, "c1", InstanceStatePut{Action: ActionStop, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := stop.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	del, err := c.DeleteInstance(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if err := del.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.GetInstance(ctx, "c1")
	if !IsNotFound(err) {
		t.Fatalf("after delete: want 404, got %v", err)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Message != "Instance not found" {
		t.Fatalf("StatusError not wrapped: %#v", err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range f.projects {
		if p != "skein-s1" && p != "" {
			t.Fatalf("request %d went to project %q", i, p)
		}
	}
}

func TestCreateFailureAndDuplicate(t *testing.T) {
	for _, modern := range []bool{false, true} {
		t.Run(map[bool]string{false: "incus6.0", true: "modern"}[modern], func(t *testing.T) {
			ctx := testCtx(t)
			f := newFakeIncus(t)
			f.modernWait = modern
			c := f.client()

			op, err := c.CreateInstance(ctx, InstancesPost{Name: "bad", Source: InstanceSource{Type: "image", Alias: "missing"}})
			if err != nil {
				t.Fatal(err)
			}
			waitErr := make(chan error, 1)
			go func() { waitErr <- op.Wait(ctx) }()
			<-f.waitCalls // expired poll
			<-f.waitCalls // blocking poll
			f.completeCreate(op.ID(), "Failed creating instance record: UNIQUE constraint failed: instances.project_id, instances.name")
			err = <-waitErr
			var oe *OperationError
			if !errors.As(err, &oe) || oe.StatusCode != Failure || !strings.Contains(oe.Err, "UNIQUE") || oe.Description != "Creating instance" {
				t.Fatalf("want OperationError, got %#v", err)
			}
			if !IsAlreadyExists(err) || IsNotFound(err) {
				t.Fatalf("duplicate via failed operation not recognised: %v", err)
			}
			if op.Get().StatusCode != Failure {
				t.Fatalf("operation state not refreshed: %+v", op.Get())
			}

			createInstance(t, ctx, f, c, "dup")
			_, err = c.CreateInstance(ctx, InstancesPost{Name: "dup", Source: InstanceSource{Type: "image", Alias: "skein-busybox"}})
			if !IsAlreadyExists(err) || IsConflict(err) || !HasStatus(err, http.StatusInternalServerError) {
				t.Fatalf("duplicate: got %v", err)
			}
		})
	}
}

func TestWaitHonoursContext(t *testing.T) {
	ctx := testCtx(t)
	f := newFakeIncus(t)
	c := f.client()
	op, err := c.CreateInstance(ctx, InstancesPost{Name: "slow", Source: InstanceSource{Type: "none"}})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	waitErr := make(chan error, 1)
	go func() { waitErr <- op.Wait(wctx) }()
	<-f.waitCalls
	<-f.waitCalls // the blocking long poll is now in flight
	cancel()
	if err := <-waitErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	f.completeCreate(op.ID(), "")
}

func TestNetworkAliasOperation(t *testing.T) {
	ctx := testCtx(t)
	f := newFakeIncus(t)
	c := f.client()
	n, err := c.GetNetwork(ctx, "skeinbr1")
	if err != nil || n.Config["ipv4.address"] != "10.77.1.1/24" || !n.Managed {
		t.Fatalf("GetNetwork: %v %+v", err, n)
	}
	if _, err := c.GetNetwork(ctx, "nope"); !IsNotFound(err) {
		t.Fatalf("missing network: %v", err)
	}
	a, err := c.GetImageAlias(ctx, "skein-busybox")
	if err != nil || a.Target != "abc123" || a.Type != InstanceTypeContainer {
		t.Fatalf("GetImageAlias: %v %+v", err, a)
	}
	if _, err := c.GetImageAlias(ctx, "nope"); !IsNotFound(err) {
		t.Fatalf("missing alias: %v", err)
	}
	if _, err := c.GetOperation(ctx, "nope"); !IsNotFound(err) {
		t.Fatalf("missing operation: %v", err)
	}
}

func TestEvents(t *testing.T) {
	ctx := testCtx(t)
	f := newFakeIncus(t)
	c := f.client().WithProject("skein-s1")
	createInstance(t, ctx, f, c, "c1")

	l, err := c.GetEvents(ctx, EventTypeLifecycle)
	if err != nil {
		t.Fatalf("GetEvents: %v", err)
	}
	defer l.Close()
	f.mu.Lock()
	q := f.eventsQ[0]
	f.mu.Unlock()
	if q.Get("type") != "lifecycle" || q.Get("project") != "skein-s1" || q.Has("all-projects") {
		t.Fatalf("events query %v", q)
	}

	op, err := c.UpdateInstanceState(ctx, "c1", InstanceStatePut{Action: ActionStart})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	var ev Event
	select {
	case ev = <-l.Events():
	case <-ctx.Done():
		t.Fatal("no event")
	}
	lc, err := ev.Lifecycle()
	if err != nil {
		t.Fatal(err)
	}
	if lc.Action != LifecycleInstanceStarted || InstanceNameFromSource(lc.Source) != "c1" || ev.Project != "skein-s1" || lc.Requestor.Protocol != "unix" {
		t.Fatalf("event %+v lifecycle %+v", ev, lc)
	}
	if _, err := ev.Operation(); err == nil {
		t.Fatal("Operation() on a lifecycle event must fail")
	}

	// A server-side close ends the stream with an error.
	f.emit(Event{Type: "close-me"})
	for range l.Events() {
	}
	if !errors.Is(l.Err(), io.EOF) {
		t.Fatalf("Err after server close: %v", l.Err())
	}

	// An unscoped client subscribes to all projects; Close ends cleanly.
	all, err := f.client().GetEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	q = f.eventsQ[1]
	f.mu.Unlock()
	if q.Get("all-projects") != "true" || q.Has("type") || q.Has("project") {
		t.Fatalf("events query %v", q)
	}
	if err := all.Close(); err != nil {
		t.Fatal(err)
	}
	if _, open := <-all.Events(); open {
		t.Fatal("events channel still open after Close")
	}
	if all.Err() != nil {
		t.Fatalf("Err after Close: %v", all.Err())
	}
	_ = all.Close()

	// Cancelling the subscription context ends the listener with that error.
	lctx, cancel := context.WithCancel(ctx)
	byCtx, err := f.client().GetEvents(lctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range byCtx.Events() {
	}
	if byCtx.Err() == nil {
		t.Fatal("Err after ctx cancel should be set")
	}
}

func TestInstanceNameFromSource(t *testing.T) {
	for src, want := range map[string]string{
		"/1.0/instances/c1":                           "c1",
		"/1.0/instances/c1?project=skein-s1":          "c1",
		"/1.0/instances/c1/snapshots/s0?project=p":    "c1",
		"/1.0/instances/with%20space":                 "with space",
		"/1.0/networks/skeinbr1":                      "",
		"/1.0/instances":                              "",
		"":                                            "",
		"/1.0/instances/c2/logs/exec-output/x.stdout": "c2",
	} {
		if got := InstanceNameFromSource(src); got != want {
			t.Errorf("InstanceNameFromSource(%q) = %q, want %q", src, got, want)
		}
	}
}

func TestParseResponse(t *testing.T) {
	resp := func(code int, ctype, body string) *http.Response {
		return &http.Response{StatusCode: code, Header: http.Header{"Content-Type": {ctype}}, Body: io.NopCloser(bytes.NewBufferString(body))}
	}
	// Operation waits answer HTTP 200 first and may then render an error envelope.
	_, err := parseResponse(resp(200, "application/json", `{"type":"error","error":"boom","error_code":500}`))
	if !HasStatus(err, 500) {
		t.Fatalf("error envelope under 200: %v", err)
	}
	_, err = parseResponse(resp(502, "text/plain", "bad gateway\n"))
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 502 || se.Message != "bad gateway" {
		t.Fatalf("non-JSON error: %#v", err)
	}
	if _, err := parseResponse(resp(200, "text/plain", "hello")); err == nil || HasStatus(err, 200) {
		t.Fatalf("garbage 200: %v", err)
	}
	env, err := parseResponse(resp(202, "application/json", `{"type":"async","status_code":100,"operation":"/1.0/operations/x","metadata":null}`))
	if err != nil || env.Type != AsyncResponse || env.Operation != "/1.0/operations/x" {
		t.Fatalf("async: %v %+v", err, env)
	}
}

// A file is read as it arrives: the first MiB is there while Incus holds
// back the rest, which a buffering client would wait for.
func TestFileReaderStreams(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "incus.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	part := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Incus-type", "file")
		w.Header().Set("Content-Length", strconv.Itoa(2*len(part)))
		_, _ = w.Write(part)
		w.(http.Flusher).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(part)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan error, 1)
	var rc io.ReadCloser
	var size int64
	go func() {
		var err error
		if rc, size, err = New(sock).GetInstanceFileReader(ctx, "c1", "/var/tmp/big"); err == nil {
			_, err = io.ReadFull(rc, make([]byte, len(part)))
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first MiB did not come before the rest: the body is buffered")
	}
	defer rc.Close()
	close(gate)
	rest, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(rest, part) || size != int64(2*len(part)) {
		t.Fatalf("the rest: %d bytes, %v, size %d", len(rest), err, size)
	}
}
