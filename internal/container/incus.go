package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/skeinhq/skein/internal/incus"
)

// Incus is the Runtime of one server backed by Incus: one project, one bridge, one pool.
type Incus struct {
	c       *incus.Client
	network string
	pool    string
}

var _ Runtime = (*Incus)(nil)

// NewIncus returns a Runtime on client c (already set to the server's project)
// whose containers attach to network and keep their root disk in pool.
func NewIncus(c *incus.Client, network, pool string) *Incus {
	return &Incus{c: c, network: network, pool: pool}
}

func fromIncus(name, status string, config map[string]string, devices map[string]map[string]string, st *incus.InstanceState) Instance {
	in := Instance{Name: name, Status: status, Image: config[KeyImage], Command: config[KeyCommand], Job: config[KeyJob]}
	in.JobVersion, _ = strconv.Atoi(config[KeyJobVersion])
	if nic, ok := devices["eth0"]; ok {
		in.StaticIPv4 = nic["ipv4.address"]
	}
	in.MAC = strings.ToLower(config["volatile.eth0.hwaddr"])
	for dev, d := range devices {
		if d["type"] == "proxy" && strings.HasPrefix(dev, "skein-pub-") {
			in.Published = append(in.Published, fmt.Sprintf("%s->%s", strings.TrimPrefix(dev, "skein-pub-"), d["connect"][strings.LastIndex(d["connect"], ":")+1:]))
		}
	}
	sort.Strings(in.Published)
	if st != nil {
		in.Status = st.Status
		if st.Pid > 0 {
			in.Boot = fmt.Sprintf("%d@%d", st.Pid, st.StartedAt.UnixNano())
		}
		if st.Memory.Usage > 0 {
			in.MemUsage = uint64(st.Memory.Usage)
		}
		if st.CPU.Usage > 0 {
			in.CPUUsage = uint64(st.CPU.Usage)
		}
		if eth, ok := st.Network["eth0"]; ok {
			for _, a := range eth.Addresses {
				if a.Family == "inet" && a.Scope == "global" {
					in.IPv4 = a.Address
					break
				}
			}
		}
	}
	return in
}

// List implements Runtime.
func (r *Incus) List(ctx context.Context) ([]Instance, error) {
	all, err := r.c.GetInstances(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Instance, 0, len(all))
	for _, i := range all {
		out = append(out, fromIncus(i.Name, i.Status, i.Config, i.Devices, i.State))
	}
	return out, nil
}

// Get implements Runtime: the instance and its state in one request.
func (r *Incus) Get(ctx context.Context, name string) (*Instance, error) {
	inst, err := r.c.GetInstanceFull(ctx, name)
	if incus.IsNotFound(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	in := fromIncus(inst.Name, inst.Status, inst.Config, inst.Devices, inst.State)
	return &in, nil
}

// Create implements Runtime: explicit devices, no profiles, so the server's
// bridge and pool are used whatever the project's profiles say.
func (r *Incus) Create(ctx context.Context, s CreateSpec) error {
	nic := map[string]string{"type": "nic", "network": r.network, "name": "eth0"}
	config := map[string]string{KeyImage: s.Image, KeyCommand: s.Command, KeyJob: s.Job, KeyJobVersion: strconv.Itoa(s.JobVersion)}
	if s.IPv4 != "" {
		// Incus reserves the address in the bridge's DHCP server (and refuses
		// one another instance has); the environment lets skein's images set
		// it at boot without waiting for a lease.
		nic["ipv4.address"] = s.IPv4
		sn, err := r.Subnet(ctx)
		if err != nil {
			return err
		}
		config[EnvIPv4] = fmt.Sprintf("%s/%d", s.IPv4, sn.Prefix.Bits())
		config[EnvGateway] = sn.Gateway.String()
	}
	req := incus.InstancesPost{
		Name:   s.Name,
		Source: incus.InstanceSource{Type: "image", Alias: s.Image},
		Type:   incus.InstanceTypeContainer,
		InstancePut: incus.InstancePut{
			Profiles: []string{},
			Config:   config,
			Devices: map[string]map[string]string{
				"root": {"type": "disk", "path": "/", "pool": r.pool},
				"eth0": nic,
			},
		},
	}
	op, err := r.c.CreateInstance(ctx, req)
	if err != nil {
		return classify(err)
	}
	return classify(op.Wait(ctx))
}

func (r *Incus) state(ctx context.Context, name string, put incus.InstanceStatePut) error {
	op, err := r.c.UpdateInstanceState(ctx, name, put)
	if incus.IsNotFound(err) {
		return ErrNotFound
	}
	if err != nil {
		return classify(err)
	}
	return classify(op.Wait(ctx))
}

// Start implements Runtime.
func (r *Incus) Start(ctx context.Context, name string) error {
	return r.state(ctx, name, incus.InstanceStatePut{Action: incus.ActionStart, Timeout: -1})
}

// Stop implements Runtime; a clean stop that hangs is forced after 30 s.
func (r *Incus) Stop(ctx context.Context, name string, force bool) error {
	err := r.state(ctx, name, incus.InstanceStatePut{Action: incus.ActionStop, Timeout: 30, Force: force})
	if err != nil && !force && !errors.Is(err, ErrNotFound) {
		return r.state(ctx, name, incus.InstanceStatePut{Action: incus.ActionStop, Timeout: -1, Force: true})
	}
	return err
}

// Restart implements Runtime.
func (r *Incus) Restart(ctx context.Context, name string, force bool) error {
	return r.state(ctx, name, incus.InstanceStatePut{Action: incus.ActionRestart, Timeout: 30, Force: force})
}

// Delete implements Runtime.
func (r *Incus) Delete(ctx context.Context, name string) error {
	op, err := r.c.DeleteInstance(ctx, name)
	if incus.IsNotFound(err) {
		return ErrNotFound
	}
	if err != nil {
		return classify(err)
	}
	return classify(op.Wait(ctx))
}

// ImageExists implements Runtime.
func (r *Incus) ImageExists(ctx context.Context, alias string) (bool, error) {
	_, err := r.c.GetImageAlias(ctx, alias)
	if incus.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// Subnet implements Runtime.
func (r *Incus) Subnet(ctx context.Context) (Subnet, error) {
	n, err := r.c.GetNetwork(ctx, r.network)
	if err != nil {
		return Subnet{}, fmt.Errorf("network %s: %w", r.network, err)
	}
	sn, err := subnetOf(n.Config)
	if err != nil {
		return Subnet{}, fmt.Errorf("network %s: %w", r.network, err)
	}
	return sn, nil
}

// subnetOf reads a bridge's subnet, gateway and first DHCP range from its
// Incus configuration ("a-b[,c-d...]"; none set means the whole subnet).
func subnetOf(config map[string]string) (Subnet, error) {
	p, err := netip.ParsePrefix(config["ipv4.address"])
	if err != nil {
		return Subnet{}, fmt.Errorf("no usable ipv4.address (%q)", config["ipv4.address"])
	}
	sn := Subnet{Prefix: p.Masked(), Gateway: p.Addr()}
	first, _, _ := strings.Cut(config["ipv4.dhcp.ranges"], ",")
	if a, b, ok := strings.Cut(first, "-"); ok {
		sn.First, _ = netip.ParseAddr(strings.TrimSpace(a))
		sn.Last, _ = netip.ParseAddr(strings.TrimSpace(b))
	}
	return sn, nil
}

// Watch implements Runtime with the lifecycle event stream of the project.
func (r *Incus) Watch(ctx context.Context) (<-chan Event, error) {
	l, err := r.c.GetEvents(ctx, incus.EventTypeLifecycle)
	if err != nil {
		return nil, err
	}
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		defer l.Close()
		for ev := range l.Events() {
			lc, err := ev.Lifecycle()
			if err != nil {
				continue
			}
			name := incus.InstanceNameFromSource(lc.Source)
			if name == "" {
				continue
			}
			select {
			case out <- Event{Name: name, Action: lc.Action, Time: ev.Timestamp}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// classify marks Incus's refusals (4xx, duplicates, failed operations) as permanent.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var se *incus.StatusError
	if errors.As(err, &se) && (se.StatusCode >= 400 && se.StatusCode < 500 || incus.IsAlreadyExists(err)) && se.StatusCode != http.StatusServiceUnavailable {
		return &PermanentError{Err: err}
	}
	var oe *incus.OperationError
	if errors.As(err, &oe) {
		return &PermanentError{Err: err}
	}
	return err
}

// Exec implements Runtime.
func (r *Incus) Exec(ctx context.Context, name string, argv ...string) (ExecResult, error) {
	res, err := r.c.ExecInstance(ctx, name, incus.InstanceExecPost{Command: argv})
	if incus.IsNotFound(err) {
		return ExecResult{}, ErrNotFound
	}
	if err != nil {
		return ExecResult{}, classify(err)
	}
	return ExecResult{Code: res.ExitCode, Stdout: res.Stdout, Stderr: res.Stderr}, nil
}

// PushFile implements Runtime.
func (r *Incus) PushFile(ctx context.Context, name, path string, data []byte, mode os.FileMode) error {
	return r.PushFileFrom(ctx, name, path, bytes.NewReader(data), mode)
}

// PushFileFrom implements Runtime: the body goes to Incus as r reads it.
func (r *Incus) PushFileFrom(ctx context.Context, name, path string, src io.Reader, mode os.FileMode) error {
	err := r.c.CreateInstanceFile(ctx, name, path, incus.InstanceFileArgs{Content: src, Mode: mode})
	if incus.IsNotFound(err) {
		return ErrNotFound
	}
	return classify(err)
}

// PullFile implements Runtime.
func (r *Incus) PullFile(ctx context.Context, name, path string) (io.ReadCloser, int64, error) {
	rc, size, err := r.c.GetInstanceFileReader(ctx, name, path)
	if incus.IsNotFound(err) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, classify(err)
	}
	return rc, size, nil
}

// DNSDir holds the dnsmasq servers-file of each bridge skein forwards DNS for.
const DNSDir = "/etc/skein/dns"

// ForwardDNS implements Runtime. The forwarding lines go into a servers-file
// that the bridge's dnsmasq re-reads on SIGHUP; raw.dnsmasq is changed only once,
// to name that file, since every change of it restarts dnsmasq (and Incus was
// seen to stall instance starts on the bridge for ~90 s afterwards).
func (r *Incus) ForwardDNS(ctx context.Context, domain string, servers []string) error {
	path := filepath.Join(DNSDir, r.network+".servers")
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "server=/%s/%s\n", domain, s)
	}
	if err := os.MkdirAll(DNSDir, 0o755); err != nil {
		return err
	}
	old, _ := os.ReadFile(path)
	changed := string(old) != b.String()
	if changed {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	n, err := r.c.GetNetwork(ctx, r.network)
	if err != nil {
		return err
	}
	raw := renderServersFile(n.Config["raw.dnsmasq"], domain, path)
	if raw != n.Config["raw.dnsmasq"] {
		// Once per bridge: dnsmasq restarts and reads the file.
		return classify(r.c.PatchNetworkConfig(ctx, r.network, map[string]string{"raw.dnsmasq": raw}))
	}
	if changed {
		return hupDnsmasq(r.network)
	}
	return nil
}

// renderServersFile makes a raw.dnsmasq value name the servers-file, dropping the
// forwarding lines of domain that older skeins wrote inline; other lines stay.
func renderServersFile(raw, domain, path string) string {
	line := "servers-file=" + path
	var out []string
	for _, l := range strings.Split(raw, "\n") {
		if l == "" || l == line || strings.HasPrefix(l, "server=/"+domain+"/") {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(append(out, line), "\n")
}

// hupDnsmasq sends SIGHUP to the dnsmasq serving a bridge, which re-reads its servers-file.
func hupDnsmasq(network string) error {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "dnsmasq" {
			continue
		}
		for _, a := range args {
			if a == "--interface="+network {
				pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				if err != nil {
					continue
				}
				return syscall.Kill(pid, syscall.SIGHUP)
			}
		}
	}
	return fmt.Errorf("no dnsmasq serves %s", network)
}

// Publish implements Runtime with a proxy device on the instance.
func (r *Incus) Publish(ctx context.Context, name string, hostPort, port int) error {
	var want map[string]string
	if port != 0 {
		want = map[string]string{"type": "proxy", "listen": fmt.Sprintf("tcp:0.0.0.0:%d", hostPort), "connect": fmt.Sprintf("tcp:127.0.0.1:%d", port)}
	}
	return r.setDevice(ctx, name, PublishDevice(hostPort), want)
}

// ExposeSocket implements Runtime with a unix proxy device bound on the host.
func (r *Incus) ExposeSocket(ctx context.Context, name, hostPath, containerPath string) error {
	if err := os.MkdirAll(filepath.Dir(hostPath), 0o700); err != nil {
		return err
	}
	return r.setDevice(ctx, name, "skein-sock", map[string]string{"type": "proxy", "bind": "host", "listen": "unix:" + hostPath, "connect": "unix:" + containerPath, "mode": "0600"})
}

// EnsureVolume implements Runtime.
func (r *Incus) EnsureVolume(ctx context.Context, name string) (bool, error) {
	_, err := r.c.GetStorageVolume(ctx, r.pool, name)
	if err == nil {
		return false, nil
	}
	if !incus.IsNotFound(err) {
		return false, classify(err)
	}
	if err := r.c.CreateStorageVolume(ctx, r.pool, name); err != nil {
		return false, classify(err)
	}
	return true, nil
}

// AttachVolume implements Runtime with a disk device named after the volume.
func (r *Incus) AttachVolume(ctx context.Context, name, volume, path string) error {
	return r.setDevice(ctx, name, "skein-vol-"+volume, map[string]string{"type": "disk", "pool": r.pool, "source": volume, "path": path})
}

// DeleteVolume implements Runtime.
func (r *Incus) DeleteVolume(ctx context.Context, name string) error {
	err := r.c.DeleteStorageVolume(ctx, r.pool, name)
	if incus.IsNotFound(err) {
		return nil
	}
	return classify(err)
}

// Readdress implements Runtime: eth0's reserved address and the boot
// environment that sets it, on a stopped container.
func (r *Incus) Readdress(ctx context.Context, name, ip string) error {
	sn, err := r.Subnet(ctx)
	if err != nil {
		return err
	}
	for attempt := 0; attempt < 5; attempt++ {
		inst, etag, err := r.c.GetInstance(ctx, name)
		if incus.IsNotFound(err) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		put := inst.Writable()
		nic, ok := put.Devices["eth0"]
		if !ok {
			return &PermanentError{Err: fmt.Errorf("instance %s has no eth0 of its own", name)}
		}
		nic["ipv4.address"] = ip
		if put.Config == nil {
			put.Config = map[string]string{}
		}
		put.Config[EnvIPv4] = fmt.Sprintf("%s/%d", ip, sn.Prefix.Bits())
		put.Config[EnvGateway] = sn.Gateway.String()
		op, err := r.c.UpdateInstance(ctx, name, put, etag)
		if incus.IsPreconditionFailed(err) {
			continue
		}
		if err != nil {
			return classify(err)
		}
		return classify(op.Wait(ctx))
	}
	return fmt.Errorf("instance %s kept changing while setting its address", name)
}

// setDevice sets (want nil: removes) one device of an instance; the etag makes
// concurrent changes retry instead of overwrite each other.
func (r *Incus) setDevice(ctx context.Context, name, dev string, want map[string]string) error {
	for attempt := 0; attempt < 5; attempt++ {
		inst, etag, err := r.c.GetInstance(ctx, name)
		if incus.IsNotFound(err) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		put := inst.Writable()
		if put.Devices == nil {
			put.Devices = map[string]map[string]string{}
		}
		cur, ok := put.Devices[dev]
		if want == nil {
			if !ok {
				return nil
			}
			delete(put.Devices, dev)
		} else {
			if ok && sameDevice(cur, want) {
				return nil
			}
			put.Devices[dev] = want
		}
		op, err := r.c.UpdateInstance(ctx, name, put, etag)
		if incus.IsPreconditionFailed(err) {
			continue
		}
		if err != nil {
			return classify(err)
		}
		return classify(op.Wait(ctx))
	}
	return fmt.Errorf("instance %s kept changing while setting device %s", name, dev)
}

func sameDevice(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}
