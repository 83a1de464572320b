package vip

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// A check command runs every checkEvery and fails past checkTimeout.
const (
	checkEvery   = time.Second
	checkTimeout = 2 * time.Second
)

// checkRun is the state of one side's check.
type checkRun struct {
	told    string // the state last written for keepalived: passing, failing, or "" before the first
	running bool
	next    time.Time
	result  *checkResult // a command's result not yet taken
}

type checkResult struct {
	ok     bool
	output string
}

// sameSide says whether two settings of a side are the same.
func sameSide(a, b events.VIPAdd) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func checkState(ok bool) string {
	if ok {
		return "passing"
	}
	return "failing"
}

// evaluate runs a side's check once: its command, or a look at the local
// service's health (unknown health counts as failing).
func (w *Worker) evaluate(ctx context.Context, v events.VIPAdd) (bool, string) {
	if v.CheckService != "" {
		up, _ := w.deps.Host.Health.Service(v.CheckService)
		return up, serviceOutput(v.CheckService, w.deps.Host.Server, up)
	}
	return runCheck(ctx, v.Check)
}

func serviceOutput(service, server string, up bool) string {
	if up {
		return fmt.Sprintf("an instance of service %s on %s passes its checks", service, server)
	}
	return fmt.Sprintf("no instance of service %s on %s passes its checks", service, server)
}

// runCheck runs a check command without a shell, its words as they were
// validated, and says whether it exited 0 within checkTimeout.
func runCheck(ctx context.Context, argv []string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	line := strings.TrimSpace(string(out))
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	if len(line) > 200 {
		line = line[:200]
	}
	switch {
	case ctx.Err() != nil:
		return false, fmt.Sprintf("%s: no answer within %s", argv[0], checkTimeout)
	case err != nil:
		return false, strings.TrimSpace(fmt.Sprintf("%s: %v %s", argv[0], err, line))
	}
	return true, strings.TrimSpace(argv[0] + ": exit 0 " + line)
}

// writeCheck tells keepalived a side's check result through its track file
// (renamed into place, so keepalived never reads half a file).
func (w *Worker) writeCheck(name string, ok bool) error {
	if err := os.MkdirAll(w.dir, 0o700); err != nil {
		return err
	}
	val := "1\n"
	if ok {
		val = "0\n"
	}
	path := CheckFile(w.dir, name)
	if err := os.WriteFile(path+".new", []byte(val), 0o600); err != nil {
		return err
	}
	return os.Rename(path+".new", path)
}

// followChecks runs the sides' checks (a command each checkEvery, a local
// service's health as the discovery worker last saw it) and, when a result
// differs from what keepalived was told, tells keepalived, records it and
// announces it. Called by the supervisor with the lock held.
func (w *Worker) followChecks(ctx context.Context, all []events.VIP) {
	now := time.Now()
	for _, v := range all {
		if !checked(v.VIPAdd) {
			continue
		}
		w.mu.Lock()
		run, ok := w.checks[v.Name]
		if !ok {
			// The state keepalived was last told survives an agent restart in the record.
			run = &checkRun{told: v.CheckState}
			w.checks[v.Name] = run
		}
		var res *checkResult
		if v.CheckService != "" {
			if up, known := w.deps.Host.Health.Service(v.CheckService); known {
				res = &checkResult{ok: up, output: serviceOutput(v.CheckService, w.deps.Host.Server, up)}
			}
		} else {
			res, run.result = run.result, nil
			if !run.running && !now.Before(run.next) {
				run.running, run.next = true, now.Add(checkEvery)
				go func(name string, argv []string) {
					ok, out := runCheck(ctx, argv)
					w.mu.Lock()
					defer w.mu.Unlock()
					if r := w.checks[name]; r != nil {
						r.running, r.result = false, &checkResult{ok: ok, output: out}
					}
				}(v.Name, v.Check)
			}
		}
		told := run.told
		w.mu.Unlock()
		if res == nil || checkState(res.ok) == told {
			continue
		}
		w.tellCheck(ctx, v, *res)
	}
}

// tellCheck makes a changed check result keepalived's, the record's and an event.
func (w *Worker) tellCheck(ctx context.Context, v events.VIP, res checkResult) {
	state := checkState(res.ok)
	if err := w.writeCheck(v.Name, res.ok); err != nil {
		w.log.Warn().Err(err).Str("vip", v.Name).Msg("writing the check file")
		return
	}
	w.mu.Lock()
	if r := w.checks[v.Name]; r != nil {
		r.told = state
	}
	w.mu.Unlock()
	v.CheckState, v.Updated = state, time.Now().UTC()
	if _, err := w.store.Put(ctx, bus.Key(w.deps.Host.Server, v.Name), v); err != nil {
		w.log.Warn().Err(err).Str("vip", v.Name).Msg("recording the check state")
	} else {
		w.remember(v.Name, &v)
	}
	ev := events.VIPCheckEvent{Name: v.Name, Server: w.deps.Host.Server, State: state, Output: res.output}
	if err := w.deps.Publisher.Publish(ctx, events.TypeVIPCheck, ev); err != nil {
		w.log.Warn().Err(err).Msg("publishing event")
	}
	w.log.Info().Str("vip", v.Name).Str("check", state).Str("output", res.output).Msg("floating IP check")
}
