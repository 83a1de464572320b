package incus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// liveProject is the testbed project the live test may create instances in.
const liveProject = "skein-s1"

// liveClient returns a client for the local Incus testbed, skipping when it is not there.
func liveClient(t *testing.T) *Client {
	t.Helper()
	if _, err := os.Stat(DefaultSocketPath); err != nil {
		t.Skipf("no Incus socket at %s", DefaultSocketPath)
	}
	c := New("").WithProject(liveProject)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.GetServer(ctx); err != nil {
		t.Skipf("Incus not answering: %v", err)
	}
	if _, err := c.GetImageAlias(ctx, "skein-busybox"); err != nil {
		t.Skipf("testbed image skein-busybox missing in %s: %v", liveProject, err)
	}
	return c
}

// waitLifecycle reads events until action arrives for the named instance.
func waitLifecycle(t *testing.T, ctx context.Context, l *EventListener, action, name string) EventLifecycle {
	t.Helper()
	for {
		select {
		case ev, ok := <-l.Events():
			if !ok {
				t.Fatalf("event stream ended waiting for %s: %v", action, l.Err())
			}
			lc, err := ev.Lifecycle()
			if err != nil {
				t.Fatalf("decode event: %v", err)
			}
			if lc.Action == action && InstanceNameFromSource(lc.Source) == name {
				t.Logf("event %s project=%q source=%q requestor=%+v context=%v", lc.Action, ev.Project, lc.Source, lc.Requestor, lc.Context)
				return *lc
			}
		case <-ctx.Done():
			t.Fatalf("no %s event for %s: %v", action, name, ctx.Err())
		}
	}
}

func TestLiveInstance(t *testing.T) {
	c := liveClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "incustest-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		if op, err := c.UpdateInstanceState(cctx, name, InstanceStatePut{Action: ActionStop, Force: true}); err == nil {
			_ = op.Wait(cctx)
		}
		op, err := c.DeleteInstance(cctx, name)
		if err == nil {
			err = op.Wait(cctx)
		}
		if err != nil && !IsNotFound(err) {
			t.Errorf("cleanup: delete %s: %v", name, err)
		}
	})

	srv, err := c.GetServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if srv.APIVersion != "1.0" || srv.Environment.Server != "incus" || srv.Environment.Project != liveProject {
		t.Fatalf("server %+v", srv)
	}
	t.Logf("incus %s, storage %s", srv.Environment.ServerVersion, srv.Environment.Storage)

	n, err := c.GetNetwork(ctx, "skeinbr1")
	if err != nil || n.Config["ipv4.address"] != "10.77.1.1/24" {
		t.Fatalf("GetNetwork: %v %+v", err, n)
	}

	l, err := c.GetEvents(ctx, EventTypeLifecycle)
	if err != nil {
		t.Fatalf("GetEvents: %v", err)
	}
	defer l.Close()

	req := InstancesPost{
		Name:   name,
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
	t.Logf("create operation: %+v", op.Get())
	if inst, _, err := c.GetInstance(ctx, name); err == nil {
		t.Logf("during creation: status=%s code=%d", inst.Status, inst.StatusCode)
	} else {
		t.Logf("during creation: %v", err)
	}
	if err := op.Wait(ctx); err != nil {
		t.Fatalf("create: %v", err)
	}
	waitLifecycle(t, ctx, l, LifecycleInstanceCreated, name)

	dup, err := c.CreateInstance(ctx, req)
	if err == nil {
		t.Logf("duplicate create accepted as operation %s", dup.ID())
		err = dup.Wait(ctx)
	}
	t.Logf("duplicate create: %v", err)
	if !IsAlreadyExists(err) {
		t.Fatalf("duplicate create: want already-exists, got %v", err)
	}

	inst, etag, err := c.GetInstance(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if inst.StatusCode != Stopped || len(inst.Profiles) != 0 || inst.ExpandedDevices["eth0"]["network"] != "skeinbr1" || etag == "" {
		t.Fatalf("instance %+v etag %q", inst, etag)
	}
	put := inst.Writable()
	put.Description = "skein incus live test"
	// The ETag covers architecture, config, devices, ephemeral and profiles, not the description.
	put.Config["user.skein.test"] = "1"
	uop, err := c.UpdateInstance(ctx, name, put, etag)
	if err != nil {
		t.Fatalf("UpdateInstance: %v", err)
	}
	if err := uop.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	stale, err := c.UpdateInstance(ctx, name, put, etag)
	if err == nil {
		// Do not leave an unexpected update running: it would block the cleanup's delete.
		_ = stale.Wait(ctx)
	}
	t.Logf("stale etag update: %v", err)
	if !IsPreconditionFailed(err) {
		t.Fatalf("stale etag: want 412, got %v", err)
	}

	sop, err := c.UpdateInstanceState(ctx, name, InstanceStatePut{Action: ActionStart})
	if err != nil {
		t.Fatal(err)
	}
	if err := sop.Wait(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitLifecycle(t, ctx, l, LifecycleInstanceStarted, name)
	st, err := c.GetInstanceState(ctx, name)
	if err != nil || st.StatusCode != Running || st.Pid == 0 {
		t.Fatalf("state: %v %+v", err, st)
	}
	full, err := c.GetInstanceFull(ctx, name)
	if err != nil || full.Name != name || full.State == nil || full.State.StatusCode != Running || full.State.Pid == 0 {
		t.Fatalf("instance with its state: %v %+v", err, full)
	}

	res, err := c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"hostname"}})
	if err != nil {
		t.Fatalf("exec hostname: %v", err)
	}
	if res.ExitCode != 0 || strings.TrimSpace(string(res.Stdout)) != name {
		t.Fatalf("exec hostname: %+v (stdout %q)", res, res.Stdout)
	}
	res, err = c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}})
	if err != nil || res.ExitCode != 7 || string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" {
		t.Fatalf("exec sh: %v %+v", err, res)
	}
	// Force 1s long polls so Wait must survive Incus 6.0's error body for an expired wait.
	saved := maxWaitPoll
	maxWaitPoll = time.Second
	res, err = c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"sh", "-c", "sleep 3; echo slept"}})
	maxWaitPoll = saved
	if err != nil || res.ExitCode != 0 || string(res.Stdout) != "slept\n" {
		t.Fatalf("exec across expired polls: %v %+v", err, res)
	}
	res, err = c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"/no/such/binary"}})
	t.Logf("exec missing binary: res=%+v err=%v", res, err)
	var oe *OperationError
	if !errors.As(err, &oe) {
		t.Fatalf("exec missing binary: want OperationError, got %v", err)
	}
	// The logs are deleted after the answer, in the background.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var leftover []string
		if _, err := c.queryStruct(ctx, "GET", instancePath(name, "logs", "exec-output"), nil, nil, &leftover); err != nil {
			t.Logf("listing exec-output logs: %v", err)
			break
		}
		if len(leftover) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exec logs not deleted: %v", leftover)
		}
	}

	content := "written by skein\n"
	if err := c.CreateInstanceFile(ctx, name, "/tmp/skein.txt", InstanceFileArgs{Content: strings.NewReader(content), Mode: 0o600}); err != nil {
		t.Fatalf("CreateInstanceFile: %v", err)
	}
	got, err := c.GetInstanceFile(ctx, name, "/tmp/skein.txt")
	if err != nil || string(got) != content {
		t.Fatalf("GetInstanceFile: %v %q", err, got)
	}
	res, err = c.ExecInstance(ctx, name, InstanceExecPost{Command: []string{"stat", "-c", "%a %u", "/tmp/skein.txt"}})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "600 0" {
		t.Fatalf("pushed file mode: %v %+v", err, res)
	}
	if _, err := c.GetInstanceFile(ctx, name, "/no/such/file"); !IsNotFound(err) {
		t.Fatalf("missing file: want 404, got %v", err)
	}

	list, err := c.GetInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, i := range list {
		if i.Name == name {
			found = i.State != nil && i.State.StatusCode == Running && i.Description == put.Description
		}
	}
	if !found {
		t.Fatalf("%s not listed as running in %+v", name, list)
	}

	if _, err := c.DeleteInstance(ctx, name); err == nil {
		t.Fatal("deleting a running instance should fail")
	} else {
		t.Logf("delete running: %v", err)
	}

	stop, err := c.UpdateInstanceState(ctx, name, InstanceStatePut{Action: ActionStop, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := stop.Wait(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	waitLifecycle(t, ctx, l, LifecycleInstanceStopped, name)

	del, err := c.DeleteInstance(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := del.Wait(ctx); err != nil {
		t.Fatalf("delete: %v", err)
	}
	waitLifecycle(t, ctx, l, LifecycleInstanceDeleted, name)
	if _, _, err := c.GetInstance(ctx, name); !IsNotFound(err) {
		t.Fatalf("after delete: want 404, got %v", err)
	}
	if _, err := c.GetOperation(ctx, del.ID()); err != nil && !IsNotFound(err) {
		t.Fatalf("GetOperation after completion: %v", err)
	}
}
