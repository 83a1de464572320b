package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/svc"
)

// Capability is the floating IP capability of an agent.
func Capability(ctx context.Context, d svc.Deps) (svc.Capability, error) {
	return New(ctx, d, d.Host.Log.With().Str("worker", "vip").Logger())
}

// lock serialises every change of this server's keepalived configuration.
const lock = "vip/keepalived"

// superviseEvery is how often keepalived and the addresses are looked at.
const superviseEvery = 50 * time.Millisecond

// restartAfter is how long a keepalived found dead stays down before it is
// started again: its peer takes the IPs over first (three adverts and the
// skew, 0.4 s at 0.1 s adverts) and the one started again hears it and
// stays the backup. Started at once, it could stand at the same moment as
// its peer (neither hearing the other), both held the IPs and the higher
// address kept them: the IP stayed with, or went back to, the server whose
// keepalived died.
const restartAfter = time.Second

// Worker keeps this server's sides of its floating IPs.
type Worker struct {
	deps  svc.Deps
	log   zerolog.Logger
	store *bus.Store[events.VIP]
	dir   string // keepalived's files

	mu      sync.Mutex
	holding map[string]bool // name → the IP is on its interface, as last seen
	// sides are this server's records, read once from the bucket: only this
	// agent writes them, so the supervisor need not list the bucket every 50 ms.
	sides map[string]events.VIP
	// checks are the sides' check runs by name (those with a check).
	checks map[string]*checkRun
	// downSince is when keepalived was found dead; zero while it runs.
	downSince time.Time
}

// New returns the floating IP worker.
func New(ctx context.Context, d svc.Deps, log zerolog.Logger) (*Worker, error) {
	st, err := bus.OpenStore[events.VIP](ctx, d.JS)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(d.State, "keepalived")
	if d.State == "" {
		dir = filepath.Join(os.TempDir(), "skein-keepalived-"+d.Host.Server)
	}
	return &Worker{deps: d, log: log, store: st, dir: dir, holding: map[string]bool{}, checks: map[string]*checkRun{}}, nil
}

// Register adds the worker's handlers to the runtime, in one visible block.
func (w *Worker) Register(r *workers.Runtime) {
	workers.Handle(r, workers.Command[events.VIPAdd, events.VIP]{Type: events.TypeVIPAdd, Lock: func(events.VIPAdd) string { return lock }, Deadline: 3 * time.Minute, Run: w.Add})
	workers.Handle(r, workers.Command[events.VIPRef, events.VIP]{Type: events.TypeVIPDelete, Lock: func(events.VIPRef) string { return lock }, Run: w.Delete})
}

// Gone is of no concern: floating IPs live on the server, not in a container.
func (w *Worker) Gone(string) {}

func (w *Worker) confPath() string { return filepath.Join(w.dir, "keepalived.conf") }
func (w *Worker) pidPath() string  { return filepath.Join(w.dir, "keepalived.pid") }

// mine lists this server's sides (the caller holds the lock).
func (w *Worker) mine(ctx context.Context) ([]events.VIP, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sides == nil {
		es, err := w.store.ListServer(ctx, w.deps.Host.Server)
		if err != nil {
			return nil, err
		}
		w.sides = map[string]events.VIP{}
		for _, e := range es {
			w.sides[e.Value.Name] = e.Value
		}
	}
	out := make([]events.VIP, 0, len(w.sides))
	for _, v := range w.sides {
		out = append(out, v)
	}
	return out, nil
}

// remember keeps a side as written to the bucket (nil forgets it).
func (w *Worker) remember(name string, v *events.VIP) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sides == nil {
		return // read whole on the next mine
	}
	if v == nil {
		delete(w.sides, name)
		return
	}
	w.sides[name] = *v
}

// Add configures this server's side of a floating IP: keepalived is
// installed when missing, the configuration with it is checked with
// keepalived -t and taken (keepalived started, or reloaded), then recorded.
func (w *Worker) Add(ctx context.Context, req *workers.Request, p events.VIPAdd) (events.VIP, error) {
	if err := Check(p); err != nil {
		return events.VIP{}, workers.Invalid("%v", err)
	}
	if err := w.ownAddress(p.Interface, p.Self, p.Prefix); err != nil {
		return events.VIP{}, err
	}
	all, err := w.mine(ctx)
	if err != nil {
		return events.VIP{}, workers.Transient("reading floating IPs: %v", err)
	}
	var sides []events.VIPAdd
	for _, v := range all {
		if v.Name == p.Name {
			if sameSide(v.VIPAdd, p) {
				return v, nil
			}
			return events.VIP{}, workers.Conflict("floating IP %s exists with other settings: `skein delvip %s` first", p.Name, p.Name)
		}
		if v.IP == p.IP {
			return events.VIP{}, workers.Conflict("%s is floating IP %s already", p.IP, v.Name)
		}
		sides = append(sides, v.VIPAdd)
	}
	sides = append(sides, p)
	if err := w.ensureInstalled(ctx, req); err != nil {
		return events.VIP{}, err
	}
	state := ""
	if checked(p) {
		if len(p.Check) > 0 {
			if _, err := exec.LookPath(p.Check[0]); err != nil {
				return events.VIP{}, workers.Invalid("check program %s is not on server %s: give its full path, or install it", p.Check[0], w.deps.Host.Server)
			}
		}
		req.Progress("check", "running the check once")
		ok, out := w.evaluate(ctx, p)
		if err := w.writeCheck(p.Name, ok); err != nil {
			return events.VIP{}, workers.Internal("%v", err)
		}
		state = checkState(ok)
		w.log.Info().Str("vip", p.Name).Str("check", state).Str("output", out).Msg("floating IP check")
	}
	req.Progress("configure", "checking and taking keepalived's configuration")
	if err := w.apply(ctx, sides); err != nil {
		return events.VIP{}, err
	}
	rec := events.VIP{VIPAdd: p, Server: w.deps.Host.Server, CheckState: state, Updated: time.Now().UTC()}
	if _, err := w.store.Put(ctx, bus.Key(w.deps.Host.Server, p.Name), rec); err != nil {
		return events.VIP{}, workers.Transient("recording floating IP %s: %v", p.Name, err)
	}
	w.remember(p.Name, &rec)
	return rec, nil
}

// Delete removes this server's side: the IP is gone from it when this returns.
func (w *Worker) Delete(ctx context.Context, req *workers.Request, p events.VIPRef) (events.VIP, error) {
	all, err := w.mine(ctx)
	if err != nil {
		return events.VIP{}, workers.Transient("reading floating IPs: %v", err)
	}
	var gone *events.VIP
	var sides []events.VIPAdd
	for i, v := range all {
		if v.Name == p.Name {
			gone = &all[i]
			continue
		}
		sides = append(sides, v.VIPAdd)
	}
	if gone == nil {
		return events.VIP{}, workers.NotFound("server %s has no floating IP %s: `skein listvips` shows them", w.deps.Host.Server, p.Name)
	}
	if err := w.apply(ctx, sides); err != nil {
		return events.VIP{}, err
	}
	w.dropAddress(*gone)
	if err := w.store.Delete(ctx, bus.Key(w.deps.Host.Server, p.Name), 0); err != nil {
		return events.VIP{}, workers.Transient("forgetting floating IP %s: %v", p.Name, err)
	}
	w.remember(p.Name, nil)
	_ = os.Remove(CheckFile(w.dir, p.Name))
	w.mu.Lock()
	delete(w.holding, p.Name)
	delete(w.checks, p.Name)
	w.mu.Unlock()
	return *gone, nil
}

// ownAddress refuses an interface that does not have the address self in that network.
func (w *Worker) ownAddress(iface, self string, prefix int) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return workers.Invalid("server %s has no interface %s", w.deps.Host.Server, iface)
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().String() == self && p.Bits() == prefix {
			return nil
		}
	}
	return workers.Invalid("interface %s of server %s does not have %s/%d", iface, w.deps.Host.Server, self, prefix)
}

// ensureInstalled installs keepalived when the server lacks it.
func (w *Worker) ensureInstalled(ctx context.Context, req *workers.Request) error {
	if _, err := exec.LookPath("keepalived"); err == nil {
		return nil
	}
	req.Progress("install", "installing keepalived")
	out, err := exec.CommandContext(ctx, "apt-get", "install", "-y", "-qq", "keepalived").CombinedOutput()
	if err != nil {
		return workers.Invalid("keepalived is missing and `apt-get install keepalived` failed: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// apply makes sides keepalived's configuration: rendered, checked with
// keepalived -t beside the running one, then swapped in and taken (SIGHUP to
// a running keepalived, else started); with no side left keepalived stops.
// A refused configuration leaves the running one as it was.
func (w *Worker) apply(ctx context.Context, sides []events.VIPAdd) error {
	if err := os.MkdirAll(w.dir, 0o700); err != nil {
		return workers.Internal("%v", err)
	}
	if len(sides) == 0 {
		w.stopKeepalived()
		_ = os.Remove(w.confPath())
		return nil
	}
	conf, err := Render(w.deps.Host.Server, w.dir, sides)
	if err != nil {
		return workers.Invalid("%v", err)
	}
	cand := w.confPath() + ".new"
	if err := os.WriteFile(cand, []byte(conf), 0o600); err != nil {
		return workers.Internal("%v", err)
	}
	if out, err := exec.CommandContext(ctx, "keepalived", "-t", "-f", cand).CombinedOutput(); err != nil {
		_ = os.Remove(cand)
		return workers.Invalid("keepalived refused the configuration (the running one stays): %s", strings.TrimSpace(string(out)))
	}
	if err := os.Rename(cand, w.confPath()); err != nil {
		return workers.Internal("%v", err)
	}
	if pid := w.running(); pid > 0 {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return workers.Transient("reloading keepalived: %v", err)
		}
		return nil
	}
	return w.startKeepalived()
}

// running is the pid of this agent's keepalived, or 0.
func (w *Worker) running() int {
	b, err := os.ReadFile(w.pidPath())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0
	}
	// A pid reused by another program is not keepalived.
	if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(cmd), w.confPath()) {
		return 0
	}
	return pid
}

// startKeepalived starts keepalived in a session of its own: it outlives
// the agent (an agent restart moves no IP) and the agent adopts it by its
// pid file when it starts again.
func (w *Worker) startKeepalived() error {
	w.clearStale()
	logf, err := os.OpenFile(filepath.Join(w.dir, "keepalived.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return workers.Internal("%v", err)
	}
	defer logf.Close()
	cmd := exec.Command("keepalived", "--dont-fork", "--log-console", "--vrrp", "-f", w.confPath(),
		"-p", w.pidPath(), "-r", filepath.Join(w.dir, "vrrp.pid"), "-c", filepath.Join(w.dir, "checkers.pid"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return workers.Transient("starting keepalived: %v", err)
	}
	go func() { _ = cmd.Wait() }() // reaped here; supervised by its pid file
	deadline := time.Now().Add(5 * time.Second)
	for w.running() == 0 {
		if time.Now().After(deadline) {
			return workers.Transient("keepalived did not start: see %s", filepath.Join(w.dir, "keepalived.log"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.log.Info().Int("pid", w.running()).Msg("keepalived started")
	return nil
}

// clearStale removes what a keepalived killed without a chance to clean up
// left: a VRRP child still running on its own (it would hold the IP behind
// the agent's back) is killed, and the pid files go (keepalived refuses to
// start while one names a live process, a zombie included).
func (w *Worker) clearStale() {
	for _, f := range []string{"keepalived.pid", "vrrp.pid", "checkers.pid"} {
		path := filepath.Join(w.dir, f)
		raw, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && pid > 0 {
			if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmd), w.confPath()) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = os.Remove(path)
	}
}

// stopKeepalived stops keepalived cleanly (it gives its addresses up).
func (w *Worker) stopKeepalived() {
	pid := w.running()
	if pid == 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && w.running() != 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// Run supervises keepalived and tells who holds each IP until ctx ends: a
// keepalived that died has its addresses removed before it is started again,
// so the two servers never both answer for an IP.
func (w *Worker) Run(ctx context.Context) {
	t := time.NewTicker(superviseEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.supervise(ctx)
	}
}

func (w *Worker) supervise(ctx context.Context) {
	unlock, err := w.deps.Host.Locks.Lock(ctx, lock)
	if err != nil {
		return
	}
	defer unlock()
	all, err := w.mine(ctx)
	if err != nil || len(all) == 0 {
		return
	}
	w.followChecks(ctx, all)
	if all, err = w.mine(ctx); err != nil { // as the checks left them
		return
	}
	if w.running() != 0 {
		w.downSince = time.Time{}
	} else {
		for _, v := range all {
			if holds(v) {
				w.dropAddress(v)
				w.tell(ctx, v, false, "cleanup")
			}
		}
		_, noConf := os.Stat(w.confPath())
		if noConf == nil && w.downSince.IsZero() {
			// Its VRRP child would advertise on alone until it stops: the
			// peer takes over only once the adverts stop.
			w.clearStale()
			w.downSince = time.Now()
		}
		if noConf == nil && time.Since(w.downSince) < restartAfter {
			return
		}
		w.downSince = time.Time{}
		if noConf != nil {
			sides := make([]events.VIPAdd, 0, len(all))
			for _, v := range all {
				sides = append(sides, v.VIPAdd)
			}
			if err := w.apply(ctx, sides); err != nil {
				w.log.Warn().Err(err).Msg("writing keepalived's configuration")
				return
			}
		} else if err := w.startKeepalived(); err != nil {
			w.log.Warn().Err(err).Msg("restarting keepalived")
			return
		}
		w.log.Warn().Msg("keepalived was not running: its addresses removed, started again")
	}
	for _, v := range all {
		now := holds(v)
		w.mu.Lock()
		before, known := w.holding[v.Name]
		w.holding[v.Name] = now
		w.mu.Unlock()
		if (known && before != now) || (!known && now != v.Holder) {
			w.tell(ctx, v, now, "keepalived")
		}
	}
}

// tell records and announces that this server took or gave up an IP.
func (w *Worker) tell(ctx context.Context, v events.VIP, holder bool, cause string) {
	w.mu.Lock()
	w.holding[v.Name] = holder
	w.mu.Unlock()
	v.Holder, v.Since, v.Updated = holder, time.Now().UTC(), time.Now().UTC()
	if _, err := w.store.Put(ctx, bus.Key(w.deps.Host.Server, v.Name), v); err != nil {
		w.log.Warn().Err(err).Str("vip", v.Name).Msg("recording the holder")
	} else {
		w.remember(v.Name, &v)
	}
	ev := events.VIPHolderEvent{Name: v.Name, IP: v.IP, Server: w.deps.Host.Server, Holder: holder, Cause: cause}
	if err := w.deps.Publisher.Publish(ctx, events.TypeVIPHolder, ev); err != nil {
		w.log.Warn().Err(err).Msg("publishing event")
	}
	w.log.Info().Str("vip", v.Name).Str("ip", v.IP).Bool("holder", holder).Str("cause", cause).Msg("floating IP holder")
}

// holds says whether the IP is on its interface here.
func holds(v events.VIP) bool {
	ifi, err := net.InterfaceByName(v.Interface)
	if err != nil {
		return false
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().String() == v.IP {
			return true
		}
	}
	return false
}

// dropAddress removes the IP from its interface here, if it is there.
func (w *Worker) dropAddress(v events.VIP) {
	if !holds(v) {
		return
	}
	out, err := exec.Command("ip", "addr", "del", fmt.Sprintf("%s/%d", v.IP, v.Prefix), "dev", v.Interface).CombinedOutput()
	if err != nil && !errors.Is(err, exec.ErrNotFound) {
		w.log.Warn().Err(err).Str("out", string(out)).Str("vip", v.Name).Msg("removing a floating IP")
	}
}
