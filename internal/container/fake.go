package container

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Fake is an in-memory Runtime for unit tests: containers get an address from
// the subnet when they start and every change is reported on Watch.
type Fake struct {
	mu       sync.Mutex
	subnet   Subnet
	images   map[string]bool
	insts    map[string]*Instance
	next     int
	watchers []chan Event
	volumes  map[string]bool
	// Calls counts calls by method name, to assert that a redelivery did no work twice.
	Calls map[string]int
	// FailCreate, when set, is returned by the next Create.
	FailCreate error
	// Files holds pushed files by "container:path".
	Files map[string][]byte
	// Execs lists the commands run, as "container: argv...".
	Execs []string
	// DNS holds the forwarding set per domain.
	DNS map[string][]string
	// Hang makes calls to the named methods block until their context ends,
	// as a hung Incus call would.
	Hang map[string]bool
	// ExecHook, when set, answers Exec instead of the default success.
	ExecHook func(name string, argv []string) (ExecResult, error)
	// PullHook, when set, answers PullFile instead of Files: a file too big
	// to hold. It is called without the fake's lock.
	PullHook func(name, path string) (io.ReadCloser, int64, error)
	// PushHook, when set, takes what PushFileFrom reads instead of Files.
	// It is called without the fake's lock.
	PushHook func(name, path string, r io.Reader, mode os.FileMode) error
	// DelayAddress leaves a started container without an address until Grant.
	DelayAddress bool
	// Taken are addresses used on the network outside this server's
	// containers (another project's): Start refuses them, as Incus does.
	Taken        map[string]bool
	boots        int
	macs         int
	leaseWatches []chan []string
}

var (
	_ Runtime = (*Fake)(nil)
	_ Leases  = (*Fake)(nil)
)

// NewFake returns a fake server with the subnet and images given.
func NewFake(prefix string, images ...string) *Fake {
	p := netip.MustParsePrefix(prefix)
	f := &Fake{subnet: Subnet{Prefix: p.Masked(), Gateway: p.Masked().Addr().Next()}, images: map[string]bool{}, insts: map[string]*Instance{}, Calls: map[string]int{}, next: 50, Files: map[string][]byte{}, DNS: map[string][]string{}, Hang: map[string]bool{}}
	for _, i := range images {
		f.images[i] = true
	}
	return f
}

// hang blocks a call to method until ctx ends when the test asked it to.
func (f *Fake) hang(ctx context.Context, method string) error {
	f.mu.Lock()
	h := f.Hang[method]
	f.mu.Unlock()
	if !h {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// SetHang makes calls to method block until their context ends (or not).
func (f *Fake) SetHang(method string, on bool) {
	f.mu.Lock()
	f.Hang[method] = on
	f.mu.Unlock()
}

func (f *Fake) emit(name, action string) {
	for _, w := range f.watchers {
		select {
		case w <- Event{Name: name, Action: action, Time: time.Now()}:
		default:
		}
	}
}

// List implements Runtime.
func (f *Fake) List(ctx context.Context) ([]Instance, error) {
	if err := f.hang(ctx, "List"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls["List"]++
	out := make([]Instance, 0, len(f.insts))
	for _, i := range f.insts {
		out = append(out, *i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// SetMemUsage sets the memory container name uses, as Incus would report it.
func (f *Fake) SetMemUsage(name string, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i, ok := f.insts[name]; ok {
		i.MemUsage = bytes
	}
}

// AddCPUUsage adds CPU time, in nanoseconds, to what container name has
// used, as Incus would report it.
func (f *Fake) AddCPUUsage(name string, ns uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i, ok := f.insts[name]; ok {
		i.CPUUsage += ns
	}
}

// Get implements Runtime.
func (f *Fake) Get(ctx context.Context, name string) (*Instance, error) {
	if err := f.hang(ctx, "Get"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.insts[name]
	if !ok {
		return nil, ErrNotFound
	}
	c := *i
	return &c, nil
}

// Create implements Runtime.
func (f *Fake) Create(ctx context.Context, s CreateSpec) error {
	if err := f.hang(ctx, "Create"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls["Create"]++
	if err := f.FailCreate; err != nil {
		f.FailCreate = nil
		return err
	}
	if _, ok := f.insts[s.Name]; ok {
		return &PermanentError{Err: fmt.Errorf("instance %q already exists", s.Name)}
	}
	if !f.images[s.Image] {
		return &PermanentError{Err: fmt.Errorf("image %q not found", s.Image)}
	}
	if s.IPv4 != "" {
		for _, i := range f.insts {
			if i.StaticIPv4 == s.IPv4 {
				// Incus's words.
				return &PermanentError{Err: fmt.Errorf("Failed add validation for device \"eth0\": IP address %q already defined on another NIC", s.IPv4)}
			}
		}
	}
	f.macs++
	mac := fmt.Sprintf("10:66:6a:00:%02x:%02x", f.macs>>8&0xff, f.macs&0xff)
	f.insts[s.Name] = &Instance{Name: s.Name, Status: "Stopped", StaticIPv4: s.IPv4, MAC: mac, Image: s.Image, Command: s.Command, Job: s.Job, JobVersion: s.JobVersion}
	f.emit(s.Name, "instance-created")
	return nil
}

// Start implements Runtime.
func (f *Fake) Start(ctx context.Context, name string) error {
	if err := f.hang(ctx, "Start"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls["Start"]++
	i, ok := f.insts[name]
	if !ok {
		return ErrNotFound
	}
	if i.Status == "Running" {
		return &PermanentError{Err: fmt.Errorf("the instance is already running")}
	}
	if i.StaticIPv4 != "" && f.Taken[i.StaticIPv4] {
		// Incus checks another project's instances only here, in these words.
		return &PermanentError{Err: fmt.Errorf("Failed start validation for device \"eth0\": IP address %q already defined on another NIC", i.StaticIPv4)}
	}
	i.Status = "Running"
	f.boots++
	i.Boot = fmt.Sprint(f.boots)
	if !f.DelayAddress {
		f.address(i)
	}
	f.emit(name, "instance-started")
	return nil
}

// Readdress implements Runtime.
func (f *Fake) Readdress(ctx context.Context, name, ip string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls["Readdress"]++
	i, ok := f.insts[name]
	if !ok {
		return ErrNotFound
	}
	for _, o := range f.insts {
		if o != i && o.StaticIPv4 == ip {
			return &PermanentError{Err: fmt.Errorf("Failed update validation for device \"eth0\": IP address %q already defined on another NIC", ip)}
		}
	}
	i.StaticIPv4 = ip
	return nil
}

// address gives a running container its address, as DHCP does.
func (f *Fake) address(i *Instance) {
	if i.StaticIPv4 != "" {
		i.IPv4 = i.StaticIPv4
		return
	}
	b := f.subnet.Prefix.Addr().As4()
	b[3] = byte(f.next)
	f.next++
	i.IPv4 = netip.AddrFrom4(b).String()
}

// Grant gives a running container that waits for its address (DelayAddress)
// its lease and address, and tells WatchLeases.
func (f *Fake) Grant(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.insts[name]
	if !ok || i.Status != "Running" || i.IPv4 != "" {
		return
	}
	f.address(i)
	for _, w := range f.leaseWatches {
		select {
		case w <- []string{i.MAC}:
		default:
		}
	}
}

// WatchLeases implements Leases: Grant tells it.
func (f *Fake) WatchLeases(ctx context.Context) (<-chan []string, error) {
	ch := make(chan []string, 64)
	f.mu.Lock()
	f.leaseWatches = append(f.leaseWatches, ch)
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, w := range f.leaseWatches {
			if w == ch {
				f.leaseWatches = append(f.leaseWatches[:i], f.leaseWatches[i+1:]...)
				break
			}
		}
		close(ch)
	}()
	return ch, nil
}

// Stop implements Runtime.
func (f *Fake) Stop(ctx context.Context, name string, force bool) error {
	if err := f.hang(ctx, "Stop"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls["Stop"]++
	i, ok := f.insts[name]
	if !ok {
		return ErrNotFound
	}
	i.Status, i.IPv4, i.Boot = "Stopped", "", ""
	f.emit(name, "instance-stopped")
	return nil
}

// Restart implements Runtime.
func (f *Fake) Restart(ctx context.Context, name string, force bool) error {
	if err := f.hang(ctx, "Restart"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls["Restart"]++
	i, ok := f.insts[name]
	if !ok {
		return ErrNotFound
	}
	f.boots++
	i.Boot = fmt.Sprint(f.boots)
	f.emit(name, "instance-restarted")
	return nil
}

// Delete implements Runtime.
func (f *Fake) Delete(ctx context.Context, name string) error {
	if err := f.hang(ctx, "Delete"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls["Delete"]++
	i, ok := f.insts[name]
	if !ok {
		return ErrNotFound
	}
	if i.Status == "Running" {
		return &PermanentError{Err: fmt.Errorf("the instance is running")}
	}
	delete(f.insts, name)
	f.emit(name, "instance-deleted")
	return nil
}

// ImageExists implements Runtime.
func (f *Fake) ImageExists(ctx context.Context, alias string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.images[alias], nil
}

// AddImage makes image alias present, as an import does.
func (f *Fake) AddImage(alias string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[alias] = true
}

// Subnet implements Runtime.
func (f *Fake) Subnet(ctx context.Context) (Subnet, error) { return f.subnet, nil }

// Watch implements Runtime.
func (f *Fake) Watch(ctx context.Context) (<-chan Event, error) {
	ch := make(chan Event, 64)
	f.mu.Lock()
	f.watchers = append(f.watchers, ch)
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, w := range f.watchers {
			if w == ch {
				f.watchers = append(f.watchers[:i], f.watchers[i+1:]...)
				break
			}
		}
		close(ch)
	}()
	return ch, nil
}

// SetStatusBehindBack changes a container as if someone used the incus CLI, emitting the event.
func (f *Fake) SetStatusBehindBack(name, status, action string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i, ok := f.insts[name]; ok {
		i.Status = status
		if status != "Running" {
			i.IPv4 = ""
		}
	}
	f.emit(name, action)
}

// Exec implements Runtime: it records the command and succeeds.
func (f *Fake) Exec(ctx context.Context, name string, argv ...string) (ExecResult, error) {
	if err := f.hang(ctx, "Exec"); err != nil {
		return ExecResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.insts[name]
	if !ok {
		return ExecResult{}, ErrNotFound
	}
	if i.Status != "Running" {
		return ExecResult{}, &PermanentError{Err: fmt.Errorf("instance %s is not running", name)}
	}
	f.Execs = append(f.Execs, name+": "+strings.Join(argv, " "))
	if f.ExecHook != nil {
		return f.ExecHook(name, argv)
	}
	return ExecResult{}, nil
}

// PushFile implements Runtime.
func (f *Fake) PushFile(ctx context.Context, name, path string, data []byte, mode os.FileMode) error {
	if err := f.hang(ctx, "PushFile"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.insts[name]; !ok {
		return ErrNotFound
	}
	f.Files[name+":"+path] = append([]byte(nil), data...)
	return nil
}

// PushFileFrom implements Runtime: what r reads goes to PushHook, or into
// Files once r is read to its end.
func (f *Fake) PushFileFrom(ctx context.Context, name, path string, r io.Reader, mode os.FileMode) error {
	if err := f.hang(ctx, "PushFileFrom"); err != nil {
		return err
	}
	f.mu.Lock()
	_, ok := f.insts[name]
	hook := f.PushHook
	f.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	if hook != nil {
		return hook(name, path, r, mode)
	}
	data, err := io.ReadAll(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	// As Incus does, a body cut short leaves what came of it.
	f.Files[name+":"+path] = data
	return err
}

// PullFile implements Runtime: PullHook answers, else a copy of Files'.
func (f *Fake) PullFile(ctx context.Context, name, path string) (io.ReadCloser, int64, error) {
	if err := f.hang(ctx, "PullFile"); err != nil {
		return nil, 0, err
	}
	f.mu.Lock()
	_, ok := f.insts[name]
	hook := f.PullHook
	data, found := f.Files[name+":"+path]
	f.mu.Unlock()
	if !ok {
		return nil, 0, ErrNotFound
	}
	if hook != nil {
		return hook(name, path)
	}
	if !found {
		return nil, 0, ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(data))), int64(len(data)), nil
}

// ForwardDNS implements Runtime.
func (f *Fake) ForwardDNS(ctx context.Context, domain string, servers []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.DNS[domain] = append([]string(nil), servers...)
	return nil
}

// EnsureVolume implements Runtime.
func (f *Fake) EnsureVolume(ctx context.Context, name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.volumes == nil {
		f.volumes = map[string]bool{}
	}
	if f.volumes[name] {
		return false, nil
	}
	f.volumes[name] = true
	return true, nil
}

// AttachVolume implements Runtime.
func (f *Fake) AttachVolume(ctx context.Context, name, volume, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.insts[name]; !ok {
		return ErrNotFound
	}
	if !f.volumes[volume] {
		return fmt.Errorf("no volume %s", volume)
	}
	return nil
}

// DeleteVolume implements Runtime.
func (f *Fake) DeleteVolume(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.volumes, name)
	return nil
}

// Publish implements Runtime.
func (f *Fake) Publish(ctx context.Context, name string, hostPort, port int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.insts[name]
	if !ok {
		return ErrNotFound
	}
	var kept []string
	prefix := fmt.Sprintf("%d->", hostPort)
	for _, p := range i.Published {
		if !strings.HasPrefix(p, prefix) {
			kept = append(kept, p)
		}
	}
	if port != 0 {
		kept = append(kept, fmt.Sprintf("%d->%d", hostPort, port))
	}
	sort.Strings(kept)
	i.Published = kept
	return nil
}

// ExposeSocket implements Runtime; the fake only records it.
func (f *Fake) ExposeSocket(ctx context.Context, name, hostPath, containerPath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.insts[name]; !ok {
		return ErrNotFound
	}
	f.Files[name+":socket:"+containerPath] = []byte(hostPath)
	return nil
}
