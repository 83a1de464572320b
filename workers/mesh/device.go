package mesh

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultTUN is the TUN clone device.
const DefaultTUN = "/dev/net/tun"

// Device is the WireGuard device of this host: the kernel's, configured
// through wgctrl, when the kernel has WireGuard; else wireguard-go's over a
// TUN interface, in the agent's process (as Tailscale and NetBird run it).
type Device struct {
	// TUN is the TUN clone device (default DefaultTUN).
	TUN string
	// Userspace makes it wireguard-go's even where the kernel has WireGuard.
	Userspace bool
	// Log takes wireguard-go's errors.
	Log zerolog.Logger

	mu     sync.Mutex
	spec   TunnelSpec
	up     bool
	link   bool           // the kernel's WireGuard interface was made
	kernel *wgctrl.Client // the kernel's device, when it has WireGuard
	wg     *device.Device // wireguard-go's device otherwise
	events chan tun.Event // the TUN's events wireguard-go sees
}

var _ Tunnel = (*Device)(nil)

// Up makes the device, or keeps the one made before when its name, key and
// port are the same and its interface is still up (a new address or MTU is
// set on it in place: its peers' sessions go on). A device half made is
// removed again: it is all there or not at all.
func (d *Device) Up(spec TunnelSpec) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	mtu := tunnelMTU(underlayMTU(spec.Underlay))
	if d.up && d.spec.Name == spec.Name && d.spec.PrivateKey == spec.PrivateKey && d.spec.Port == spec.Port {
		l, err := netlink.LinkByName(spec.Name)
		if err == nil && l.Attrs().Flags&unix.IFF_UP != 0 {
			if err := d.adjust(l, spec, mtu); err != nil {
				return err
			}
			d.spec = spec
			return nil
		}
		d.Log.Warn().Str("device", spec.Name).Msg("the WireGuard interface went away or down: making it again")
	}
	d.closeLocked()
	d.spec = spec
	if err := d.make(spec, mtu); err != nil {
		d.closeLocked()
		return err
	}
	d.up = true
	how := "userspace: wireguard-go over TUN"
	if d.kernel != nil {
		how = "the kernel's"
	}
	d.Log.Info().Str("device", spec.Name).Int("port", spec.Port).Int("mtu", mtu).Str("address", spec.Address.String()).Str("wireguard", how).Msg("WireGuard device up")
	return nil
}

// adjust sets a new address or MTU on the running device.
func (d *Device) adjust(l netlink.Link, spec TunnelSpec, mtu int) error {
	if l.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("the MTU of %s: %w", spec.Name, err)
		}
	}
	if spec.Address == d.spec.Address {
		return nil
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: ipNet(spec.Address)}); err != nil {
		return fmt.Errorf("the address %s on %s: %w", spec.Address, spec.Name, err)
	}
	if err := netlink.AddrDel(l, &netlink.Addr{IPNet: ipNet(d.spec.Address)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("the old address %s on %s: %w", d.spec.Address, spec.Name, err)
	}
	return nil
}

// make makes the device: the kernel's when the kernel knows the link type,
// else wireguard-go's; then its address and MTU, and the link up.
func (d *Device) make(spec TunnelSpec, mtu int) error {
	port := spec.Port
	base := wgtypes.Config{PrivateKey: &spec.PrivateKey, ListenPort: &port}
	var err error = unix.EOPNOTSUPP
	if !d.Userspace {
		err = netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: spec.Name, MTU: mtu}})
	}
	if errors.Is(err, unix.EEXIST) {
		if l, lerr := netlink.LinkByName(spec.Name); lerr == nil && l.Type() == "wireguard" {
			err = nil // a kernel device left by an agent that stopped uncleanly
		} else {
			return fmt.Errorf("an interface named %s exists and is not a WireGuard device: another agent on this host? remove it (ip link del %s)", spec.Name, spec.Name)
		}
	}
	switch {
	case err == nil:
		d.link = true
		if d.kernel, err = wgctrl.New(); err != nil {
			return fmt.Errorf("the kernel's WireGuard: %w", err)
		}
		if err := d.kernel.ConfigureDevice(spec.Name, base); err != nil {
			return fmt.Errorf("configuring %s: %w (is UDP port %d free? --mesh-port picks another)", spec.Name, err, spec.Port)
		}
	case errors.Is(err, unix.EOPNOTSUPP):
		if err := d.userspace(spec, mtu, base); err != nil {
			return err
		}
	default:
		return fmt.Errorf("making the interface %s: %w (the agent needs CAP_NET_ADMIN: run it as root)", spec.Name, err)
	}
	l, err := netlink.LinkByName(spec.Name)
	if err != nil {
		return fmt.Errorf("the interface %s: %w", spec.Name, err)
	}
	if err := netlink.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("the MTU of %s: %w", spec.Name, err)
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: ipNet(spec.Address)}); err != nil {
		return fmt.Errorf("the address %s on %s: %w", spec.Address, spec.Name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up: %w", spec.Name, err)
	}
	return nil
}

// userspace makes wireguard-go's device over a TUN interface.
func (d *Device) userspace(spec TunnelSpec, mtu int, base wgtypes.Config) error {
	td, err := openTUN(d.tunPath(), spec.Name, mtu)
	if err != nil {
		return err
	}
	d.events = make(chan tun.Event, 8)
	go upDownless(td.Events(), d.events)
	log := d.Log.With().Str("device", spec.Name).Logger()
	wl := &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug().Msgf("wireguard-go: "+format, args...) },
		Errorf:   func(format string, args ...any) { log.Warn().Msgf("wireguard-go: "+format, args...) },
	}
	d.wg = device.NewDevice(&quietTUN{Device: td, events: d.events}, conn.NewDefaultBind(), wl)
	if err := d.wg.IpcSet(uapiSet(base)); err != nil {
		return fmt.Errorf("configuring %s: %w (is UDP port %d free? --mesh-port picks another)", spec.Name, err, spec.Port)
	}
	if err := d.wg.Up(); err != nil {
		return fmt.Errorf("bringing %s up: %w (is UDP port %d free? --mesh-port picks another)", spec.Name, err, spec.Port)
	}
	return nil
}

func (d *Device) tunPath() string {
	if d.TUN == "" {
		return DefaultTUN
	}
	return d.TUN
}

// Configure applies a change of the device's peers.
func (d *Device) Configure(cfg wgtypes.Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.kernel != nil:
		return d.kernel.ConfigureDevice(d.spec.Name, cfg)
	case d.wg != nil:
		return d.wg.IpcSet(uapiSet(cfg))
	}
	return errors.New("the WireGuard device is not up")
}

// Peers are the device's peers, from the kernel or wireguard-go's IpcGet.
func (d *Device) Peers() ([]wgtypes.Peer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.kernel != nil:
		dev, err := d.kernel.Device(d.spec.Name)
		if err != nil {
			return nil, err
		}
		return dev.Peers, nil
	case d.wg != nil:
		s, err := d.wg.IpcGet()
		if err != nil {
			return nil, err
		}
		return parseUAPI(s)
	}
	return nil, errors.New("the WireGuard device is not up")
}

// Close removes the device: wireguard-go's closes its TUN, whose interface
// goes with it; the kernel's interface is deleted.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
	return nil
}

func (d *Device) closeLocked() {
	if d.wg != nil {
		d.wg.Close()
		d.wg = nil
	}
	if d.link {
		if l, err := netlink.LinkByName(d.spec.Name); err == nil && l.Type() == "wireguard" {
			_ = netlink.LinkDel(l)
		}
		d.link = false
	}
	if d.kernel != nil {
		d.kernel.Close()
		d.kernel = nil
	}
	d.up = false
}

// openTUN opens the TUN interface name through the clone device at path, as
// wireguard-go's tun.CreateTUN does with its fixed path; its errors say the fix.
func openTUN(path, name string, mtu int) (tun.Device, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, tunError(path, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("the interface name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("the TUN interface %s is held by another process: another agent on this host? stop it, or give this one --mesh-port and another state", name)
		}
		return nil, tunError(path, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, tunError(path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	td, err := tun.CreateTUNFromFile(f, mtu)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("the TUN interface %s: %w", name, err)
	}
	return td, nil
}

// tunError says why the TUN device could not be had, with the fix.
func tunError(path string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist: load the tun module (modprobe tun), or give the agent's container that device (Incus: a unix-char device /dev/net/tun)", path)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: %v: run the agent as root (it needs CAP_NET_ADMIN and the TUN device)", path, err)
	}
	return fmt.Errorf("%s is not a usable TUN device (%v): load the tun module (modprobe tun), or give the agent's container /dev/net/tun", path, err)
}

// quietTUN is a TUN device whose up and down events wireguard-go does not
// see: the agent brings the device up itself and keeps it so, where
// wireguard-go would close and reopen its UDP socket, from a goroutine of
// its own, whenever the link went down and up.
type quietTUN struct {
	tun.Device
	events chan tun.Event
}

// Events are the TUN's events but up and down.
func (q *quietTUN) Events() <-chan tun.Event { return q.events }

// upDownless passes the events of in but up and down to out, and closes out
// when in closes (the TUN closed).
func upDownless(in <-chan tun.Event, out chan<- tun.Event) {
	defer close(out)
	for ev := range in {
		if ev &^= tun.EventUp | tun.EventDown; ev != 0 {
			out <- ev
		}
	}
}

// underlayMTU is the MTU of the interface that holds addr; 0 when none does.
func underlayMTU(addr netip.Addr) int {
	list, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0
	}
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				return l.Attrs().MTU
			}
		}
	}
	return 0
}
