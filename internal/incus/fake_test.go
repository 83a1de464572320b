package incus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// fakeIncus is an in-memory stand-in for incusd serving the endpoints the client uses, over a unix socket.
type fakeIncus struct {
	t    *testing.T
	sock string
	srv  *httptest.Server

	mu        sync.Mutex
	instances map[string]*fakeInstance // key: project + "/" + name
	ops       map[string]*fakeOp
	files     map[string]fakeFile // key: instance + ":" + path
	logs      map[string][]byte   // key: URL path
	projects  []string            // project query of every request, in order
	subs      []chan Event
	eventsQ   []url.Values

	pendingCreates map[string]pendingCreate // operation ID -> creation to apply when the test completes it

	waitCalls chan string // receives the operation ID of every wait request

	// modernWait answers expired and failed waits with the operation (newer Incus) instead of an error body (Incus 6.0).
	modernWait bool
}

type pendingCreate struct {
	key string
	req InstancesPost
}

type fakeInstance struct {
	inst    Instance
	version int
}

type fakeFile struct {
	data   []byte
	header http.Header
}

type fakeOp struct {
	data        APIOperation
	done        chan struct{}
	timeoutLeft int // number of wait calls answered as if the server-side timeout expired
}

func newFakeIncus(t *testing.T) *fakeIncus {
	t.Helper()
	f := &fakeIncus{
		t:         t,
		sock:      filepath.Join(t.TempDir(), "incus.sock"),
		instances: map[string]*fakeInstance{},
		ops:       map[string]*fakeOp{},
		files:     map[string]fakeFile{},
		logs:      map[string][]byte{},
		waitCalls: make(chan string, 100),

		pendingCreates: map[string]pendingCreate{},
	}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /1.0", f.getServer)
	mux.HandleFunc("GET /1.0/instances", f.getInstances)
	mux.HandleFunc("POST /1.0/instances", f.postInstances)
	mux.HandleFunc("GET /1.0/instances/{name}", f.getInstance)
	mux.HandleFunc("PUT /1.0/instances/{name}", f.putInstance)
	mux.HandleFunc("DELETE /1.0/instances/{name}", f.deleteInstance)
	mux.HandleFunc("GET /1.0/instances/{name}/state", f.getState)
	mux.HandleFunc("PUT /1.0/instances/{name}/state", f.putState)
	mux.HandleFunc("POST /1.0/instances/{name}/exec", f.postExec)
	mux.HandleFunc("GET /1.0/instances/{name}/logs/exec-output/{file}", f.getLog)
	mux.HandleFunc("DELETE /1.0/instances/{name}/logs/exec-output/{file}", f.deleteLog)
	mux.HandleFunc("POST /1.0/instances/{name}/files", f.postFile)
	mux.HandleFunc("GET /1.0/instances/{name}/files", f.getFile)
	mux.HandleFunc("GET /1.0/networks/{name}", f.getNetwork)
	mux.HandleFunc("GET /1.0/images/aliases/{name}", f.getAlias)
	mux.HandleFunc("GET /1.0/operations/{id}", f.getOperation)
	mux.HandleFunc("GET /1.0/operations/{id}/wait", f.waitOperation)
	mux.HandleFunc("GET /1.0/events", f.events)
	f.srv = httptest.NewUnstartedServer(f.record(mux))
	f.srv.Listener = ln
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeIncus) client() *Client { return New(f.sock) }

// record notes the project of every request so tests can check WithProject.
func (f *fakeIncus) record(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.projects = append(f.projects, r.URL.Query().Get("project"))
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func project(r *http.Request) string {
	if p := r.URL.Query().Get("project"); p != "" {
		return p
	}
	return "default"
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func sync200(w http.ResponseWriter, md any) {
	writeJSON(w, http.StatusOK, map[string]any{"type": "sync", "status": "Success", "status_code": 200, "metadata": md})
}

func fail(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"type": "error", "error": msg, "error_code": code})
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newOp registers an operation; run (if not nil) executes synchronously to fill metadata and outcome before answering.
func (f *fakeIncus) newOp(w http.ResponseWriter, desc, resource string, pending bool, run func(op *APIOperation) error) *fakeOp {
	op := &fakeOp{
		data: APIOperation{
			ID: randomID(), Class: OperationClassTask, Description: desc,
			Status: "Running", StatusCode: Running,
			Resources: map[string][]string{"instances": {resource}},
			Metadata:  map[string]any{},
		},
		done: make(chan struct{}),
	}
	f.mu.Lock()
	f.ops[op.data.ID] = op
	f.mu.Unlock()
	snapshot := op.data
	if !pending {
		f.finish(op.data.ID, run)
	}
	w.Header().Set("Location", "/1.0/operations/"+snapshot.ID)
	writeJSON(w, http.StatusAccepted, map[string]any{
		"type": "async", "status": "Operation created", "status_code": 100,
		"operation": "/1.0/operations/" + snapshot.ID, "metadata": snapshot,
	})
	return op
}

// finish completes an operation, running fn to decide success or failure.
func (f *fakeIncus) finish(id string, fn func(op *APIOperation) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	op := f.ops[id]
	var err error
	if fn != nil {
		err = fn(&op.data)
	}
	if err != nil {
		op.data.Status, op.data.StatusCode, op.data.Err = "Failure", Failure, err.Error()
	} else {
		op.data.Status, op.data.StatusCode = "Success", Success
	}
	close(op.done)
}

func (f *fakeIncus) emit(ev Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.subs {
		s <- ev
	}
}

func lifecycleEvent(projectName, action, name string) Event {
	src := "/1.0/instances/" + name
	if projectName != "default" {
		src += "?project=" + projectName
	}
	md, _ := json.Marshal(EventLifecycle{Action: action, Source: src, Requestor: &EventLifecycleRequestor{Username: "root", Protocol: "unix"}})
	return Event{Type: EventTypeLifecycle, Timestamp: time.Now(), Metadata: md, Project: projectName, Location: "none"}
}

func (f *fakeIncus) getServer(w http.ResponseWriter, r *http.Request) {
	sync200(w, Server{APIVersion: "1.0", Auth: "trusted", APIStatus: "stable",
		Environment: ServerEnvironment{Server: "incus", ServerVersion: "6.0.4", Project: project(r)}})
}

func (f *fakeIncus) getInstances(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("recursion") != "2" {
		fail(w, http.StatusBadRequest, "test expects recursion=2")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	list := []InstanceFull{}
	for key, fi := range f.instances {
		if strings.HasPrefix(key, project(r)+"/") {
			list = append(list, InstanceFull{Instance: fi.inst, State: &InstanceState{Status: fi.inst.Status, StatusCode: fi.inst.StatusCode}})
		}
	}
	sync200(w, list)
}

func (f *fakeIncus) postInstances(w http.ResponseWriter, r *http.Request) {
	var req InstancesPost
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	key := project(r) + "/" + req.Name
	f.mu.Lock()
	_, exists := f.instances[key]
	f.mu.Unlock()
	if exists {
		// Real Incus answers a duplicate name with a plain (500) error, not 409.
		fail(w, http.StatusInternalServerError, fmt.Sprintf("Instance %q already exists", req.Name))
		return
	}
	op := f.newOp(w, "Creating instance", "/1.0/instances/"+req.Name, true, nil)
	f.mu.Lock()
	op.timeoutLeft = 1
	f.pendingCreates[op.data.ID] = pendingCreate{key: key, req: req}
	f.mu.Unlock()
}

// completeCreate finishes a pending creation, failing it with msg when msg is not empty.
func (f *fakeIncus) completeCreate(id, msg string) {
	f.finish(id, func(op *APIOperation) error {
		pc := f.pendingCreates[id]
		delete(f.pendingCreates, id)
		if msg != "" {
			return fmt.Errorf("%s", msg)
		}
		f.instances[pc.key] = &fakeInstance{inst: Instance{
			InstancePut: pc.req.InstancePut, Name: pc.req.Name, Type: InstanceTypeContainer,
			Status: "Stopped", StatusCode: Stopped, Project: strings.Split(pc.key, "/")[0], Location: "none",
		}, version: 1}
		return nil
	})
}

// lookup finds an instance or answers 404 like Incus does.
func (f *fakeIncus) lookup(w http.ResponseWriter, r *http.Request) *fakeInstance {
	fi := f.instances[project(r)+"/"+r.PathValue("name")]
	if fi == nil {
		fail(w, http.StatusNotFound, "Instance not found")
	}
	return fi
}

func (f *fakeIncus) getInstance(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi := f.lookup(w, r)
	if fi == nil {
		return
	}
	w.Header().Set("ETag", fmt.Sprintf("%q", strconv.Itoa(fi.version)))
	if r.URL.Query().Get("recursion") == "1" {
		st := fi.state()
		sync200(w, InstanceFull{Instance: fi.inst, State: &st})
		return
	}
	sync200(w, fi.inst)
}

func (f *fakeIncus) putInstance(w http.ResponseWriter, r *http.Request) {
	var put InstancePut
	if err := json.NewDecoder(r.Body).Decode(&put); err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	fi := f.lookup(w, r)
	if fi == nil {
		f.mu.Unlock()
		return
	}
	if m := r.Header.Get("If-Match"); m != "" && strings.Trim(m, `"`) != strconv.Itoa(fi.version) {
		f.mu.Unlock()
		fail(w, http.StatusPreconditionFailed, "ETag doesn't match")
		return
	}
	fi.inst.InstancePut = put
	fi.version++
	f.mu.Unlock()
	f.newOp(w, "Updating instance", "/1.0/instances/"+r.PathValue("name"), false, nil)
}

func (f *fakeIncus) deleteInstance(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	fi := f.lookup(w, r)
	if fi == nil {
		f.mu.Unlock()
		return
	}
	if fi.inst.StatusCode == Running {
		f.mu.Unlock()
		fail(w, http.StatusBadRequest, "Instance is running")
		return
	}
	delete(f.instances, project(r)+"/"+r.PathValue("name"))
	f.mu.Unlock()
	f.newOp(w, "Deleting instance", "/1.0/instances/"+r.PathValue("name"), false, nil)
}

func (f *fakeIncus) getState(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi := f.lookup(w, r)
	if fi == nil {
		return
	}
	sync200(w, fi.state())
}

// state is the instance's live state as Incus reports it.
func (fi *fakeInstance) state() InstanceState {
	st := InstanceState{Status: fi.inst.Status, StatusCode: fi.inst.StatusCode, Processes: -1}
	if fi.inst.StatusCode == Running {
		st.Pid = 4242
		st.Network = map[string]InstanceStateNetwork{"eth0": {State: "up", Addresses: []InstanceStateNetworkAddress{{Family: "inet", Address: "10.77.1.10", Netmask: "24", Scope: "global"}}}}
	}
	return st
}

func (f *fakeIncus) putState(w http.ResponseWriter, r *http.Request) {
	var put InstanceStatePut
	if err := json.NewDecoder(r.Body).Decode(&put); err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	name, proj := r.PathValue("name"), project(r)
	f.mu.Lock()
	fi := f.lookup(w, r)
	f.mu.Unlock()
	if fi == nil {
		return
	}
	f.newOp(w, "Changing instance state", "/1.0/instances/"+name, false, func(*APIOperation) error {
		switch put.Action {
		case ActionStart:
			fi.inst.Status, fi.inst.StatusCode = "Running", Running
		case ActionStop:
			fi.inst.Status, fi.inst.StatusCode = "Stopped", Stopped
		default:
			return fmt.Errorf("unsupported action %q", put.Action)
		}
		return nil
	})
	action := map[string]string{ActionStart: LifecycleInstanceStarted, ActionStop: LifecycleInstanceStopped}[put.Action]
	f.emit(lifecycleEvent(proj, action, name))
}

func (f *fakeIncus) postExec(w http.ResponseWriter, r *http.Request) {
	var req InstanceExecPost
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if !req.RecordOutput || req.WaitForWS || req.Interactive {
		fail(w, http.StatusBadRequest, "test expects record-output without websockets")
		return
	}
	name := r.PathValue("name")
	f.mu.Lock()
	fi := f.lookup(w, r)
	f.mu.Unlock()
	if fi == nil {
		return
	}
	if fi.inst.StatusCode != Running {
		fail(w, http.StatusBadRequest, "Instance is not running")
		return
	}
	f.newOp(w, "Executing command", "/1.0/instances/"+name, false, func(op *APIOperation) error {
		var stdout, stderr string
		code := 0
		switch req.Command[0] {
		case "echo":
			stdout = strings.Join(req.Command[1:], " ") + "\n"
		case "fail":
			stderr, code = "boom\n", 3
		default:
			stderr, code = "not found\n", 127
		}
		base := "/1.0/instances/" + name + "/logs/exec-output/exec_" + op.ID
		f.logs[base+".stdout"] = []byte(stdout)
		f.logs[base+".stderr"] = []byte(stderr)
		op.Metadata["return"] = code
		op.Metadata["output"] = map[string]string{"1": base + ".stdout", "2": base + ".stderr"}
		return nil
	})
}

func (f *fakeIncus) getLog(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	data, ok := f.logs[r.URL.Path]
	f.mu.Unlock()
	if !ok {
		fail(w, http.StatusNotFound, "log not found")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
}

func (f *fakeIncus) deleteLog(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	delete(f.logs, r.URL.Path)
	f.mu.Unlock()
	sync200(w, map[string]any{})
}

func (f *fakeIncus) postFile(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lookup(w, r) == nil {
		return
	}
	f.files[r.PathValue("name")+":"+r.URL.Query().Get("path")] = fakeFile{data: data, header: r.Header.Clone()}
	sync200(w, map[string]any{})
}

func (f *fakeIncus) getFile(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lookup(w, r) == nil {
		return
	}
	if p == "/etc" {
		w.Header().Set("X-Incus-type", "directory")
		sync200(w, []string{"hostname", "passwd"})
		return
	}
	if p == "/etc/link" {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Incus-type", "symlink")
		_, _ = w.Write([]byte("/etc/shadow"))
		return
	}
	ff, ok := f.files[r.PathValue("name")+":"+p]
	if !ok {
		fail(w, http.StatusNotFound, "Not found")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Incus-type", "file")
	_, _ = w.Write(ff.data)
}

func (f *fakeIncus) getNetwork(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("name") != "skeinbr1" {
		fail(w, http.StatusNotFound, "Network not found")
		return
	}
	sync200(w, Network{NetworkPut: NetworkPut{Config: map[string]string{"ipv4.address": "10.77.1.1/24"}}, Name: "skeinbr1", Type: "bridge", Managed: true, Status: "Created"})
}

func (f *fakeIncus) getAlias(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("name") != "skein-busybox" {
		fail(w, http.StatusNotFound, "Image alias not found")
		return
	}
	sync200(w, ImageAliasesEntry{ImageAliasesEntryPut: ImageAliasesEntryPut{Target: "abc123"}, Name: "skein-busybox", Type: InstanceTypeContainer})
}

func (f *fakeIncus) getOperation(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	op := f.ops[r.PathValue("id")]
	if op == nil {
		fail(w, http.StatusNotFound, "Operation not found")
		return
	}
	sync200(w, op.data)
}

func (f *fakeIncus) waitOperation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if secs, err := strconv.Atoi(r.URL.Query().Get("timeout")); err != nil || secs < 1 {
		fail(w, http.StatusBadRequest, "test expects a positive timeout")
		return
	}
	f.mu.Lock()
	op := f.ops[id]
	if op == nil {
		f.mu.Unlock()
		fail(w, http.StatusNotFound, "Operation not found")
		return
	}
	expired := op.timeoutLeft > 0
	if expired {
		op.timeoutLeft--
	}
	f.mu.Unlock()
	f.waitCalls <- id
	if !expired {
		select {
		case <-op.done:
		case <-r.Context().Done():
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.modernWait:
		sync200(w, op.data)
	case expired:
		// Incus 6.0 renders an expired wait as an error body after already sending 200.
		writeJSON(w, http.StatusOK, map[string]any{"type": "error", "error": "context deadline exceeded", "error_code": 500})
	case op.data.StatusCode == Failure:
		writeJSON(w, http.StatusOK, map[string]any{"type": "error", "error": op.data.Err, "error_code": 500})
	default:
		sync200(w, op.data)
	}
}

func (f *fakeIncus) events(w http.ResponseWriter, r *http.Request) {
	sub := make(chan Event, 16)
	f.mu.Lock()
	f.subs = append(f.subs, sub)
	f.eventsQ = append(f.eventsQ, r.URL.Query())
	f.mu.Unlock()
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx := conn.CloseRead(r.Context())
	for {
		select {
		case ev := <-sub:
			data, _ := json.Marshal(ev)
			if ev.Type == "close-me" {
				_ = conn.Close(websocket.StatusNormalClosure, "bye")
				return
			}
			if err := conn.Write(ctx, websocket.MessageText, data); err != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// testCtx bounds each test so a bug shows up as a failure rather than a hung run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
