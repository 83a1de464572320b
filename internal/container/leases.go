package container

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

var _ Leases = (*Incus)(nil)

// lease is one line of a dnsmasq leases file as far as news of it goes.
type lease struct {
	// expiry is the lease's end, as dnsmasq wrote it (seconds, or 0).
	expiry string
	// ip is the leased IPv4 address.
	ip string
}

// parseLeases reads a dnsmasq leases file ("EXPIRY MAC IP HOSTNAME
// CLIENT-ID" a line) into leases by lower-case hardware address; lines it
// cannot read (DHCPv6 ones, a line cut short) are left out.
func parseLeases(data []byte) map[string]lease {
	out := map[string]lease{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		ip, err := netip.ParseAddr(f[2])
		if err != nil || !ip.Is4() || len(f[1]) != len("00:00:00:00:00:00") || strings.Count(f[1], ":") != 5 {
			continue
		}
		out[strings.ToLower(f[1])] = lease{expiry: f[0], ip: ip.String()}
	}
	return out
}

// granted names the hardware addresses whose lease in now is new or
// differs from the one in was, and adds them to was. Leases gone from now
// stay in was: dnsmasq truncates the file before writing it, and a read in
// between sees none.
func granted(was, now map[string]lease) []string {
	var macs []string
	for mac, l := range now {
		if was[mac] != l {
			macs = append(macs, mac)
			was[mac] = l
		}
	}
	return macs
}

// LeasesFile is where Incus keeps the leases of network's dnsmasq, beside
// its socket (/var/lib/incus/unix.socket → /var/lib/incus/networks/NETWORK/dnsmasq.leases).
func LeasesFile(socketPath, network string) string {
	return filepath.Join(filepath.Dir(socketPath), "networks", network, "dnsmasq.leases")
}

// WatchLeases implements Leases by following the leases file of the
// network's dnsmasq with inotify: dnsmasq rewrites it as it grants each
// lease, before the container has configured the address.
func (r *Incus) WatchLeases(ctx context.Context) (<-chan []string, error) {
	return watchLeases(ctx, LeasesFile(r.c.SocketPath(), r.network))
}

// watchLeases follows the dnsmasq leases file at path (its directory, so
// that a file made again is followed too) and sends what granted finds
// after each change.
func watchLeases(ctx context.Context, path string) (<-chan []string, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	dir, base := filepath.Split(path)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MODIFY|unix.IN_CLOSE_WRITE|unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("following %s: %w", dir, err)
	}
	// Non-blocking, so reads wait in Go's poller and Close ends them.
	f := os.NewFile(uintptr(fd), "inotify")
	was := map[string]lease{}
	if data, err := os.ReadFile(path); err == nil {
		granted(was, parseLeases(data))
	}
	out := make(chan []string, 16)
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		defer close(out)
		buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			if !names(buf[:n], base) {
				continue
			}
			data, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if macs := granted(was, parseLeases(data)); len(macs) > 0 {
				select {
				case out <- macs:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// names says whether the inotify events in buf include one about the file base.
func names(buf []byte, base string) bool {
	for off := 0; off+unix.SizeofInotifyEvent <= len(buf); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		end := off + unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(buf) {
			return false
		}
		name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:end], "\x00"))
		if name == base {
			return true
		}
		off = end
	}
	return false
}
