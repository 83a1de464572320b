package container

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/skeinhq/skein/internal/images"
	"github.com/skeinhq/skein/internal/incus"
)

// Lack is something a server needs to run containers and does not have.
type Lack struct {
	// What is "incus", "project", "network", "pool" or "image".
	What string
	// Name is the missing object's name (the socket for incus).
	Name string
	// Detail is the error that showed it, when it says more than "not found".
	Detail string
}

// Blocks reports whether the lack stops every container (an image lacking
// stops only the containers made from it).
func (l Lack) Blocks() bool { return l.What != "image" }

// Prereqs is what an agent needs of its server's container manager beyond
// running containers: checking that its objects exist and making them.
type Prereqs interface {
	// Check lists what the server lacks: Incus itself, the project, the
	// network, the pool, and any of images.
	Check(ctx context.Context, images []string) []Lack
	// Prepare creates what is missing (never changing what exists) and says
	// what it created.
	Prepare(ctx context.Context, p PrepareSpec) ([]string, error)
	// Import installs the unified image tarball at path under alias and
	// returns its fingerprint.
	Import(ctx context.Context, alias, path string) (string, error)
}

// PrepareSpec says how to make a missing network.
type PrepareSpec struct {
	// Subnet is the /24 to give a new bridge; zero picks a free one in Supernet.
	Subnet netip.Prefix
	// Supernet is where a free /24 is looked for.
	Supernet netip.Prefix
}

var _ Prereqs = (*Incus)(nil)

// Check implements Prereqs.
func (r *Incus) Check(ctx context.Context, images []string) []Lack {
	if _, err := r.c.GetServer(ctx); err != nil {
		return []Lack{{What: "incus", Name: r.c.SocketPath(), Detail: err.Error()}}
	}
	var out []Lack
	missing := func(what, name string, err error) {
		if err == nil {
			return
		}
		l := Lack{What: what, Name: name}
		if !incus.IsNotFound(err) {
			l.Detail = err.Error()
		}
		out = append(out, l)
	}
	var perr error
	if r.c.Project() != "" {
		_, perr = r.c.GetProject(ctx, r.c.Project())
		missing("project", r.c.Project(), perr)
	}
	_, err := r.c.WithProject("").GetNetwork(ctx, r.network)
	missing("network", r.network, err)
	_, err = r.c.GetStoragePool(ctx, r.pool)
	missing("pool", r.pool, err)
	if perr == nil {
		for _, img := range images {
			ok, err := r.ImageExists(ctx, img)
			if err != nil {
				missing("image", img, err)
			} else if !ok {
				out = append(out, Lack{What: "image", Name: img})
			}
		}
	}
	return out
}

// Import implements Prereqs, in the images of the server's project.
func (r *Incus) Import(ctx context.Context, alias, path string) (string, error) {
	desc := ""
	for _, rc := range images.Recipes {
		if rc.Alias == alias {
			desc = rc.Description
		}
	}
	return images.Import(ctx, r.c, alias, desc, path)
}

// Prepare implements Prereqs: the storage pool (dir), a NAT-free bridge on a
// free /24 whose dnsmasq reads skein's forwarding file, and the project (its
// images, profiles, networks and volumes shared with the default project).
func (r *Incus) Prepare(ctx context.Context, spec PrepareSpec) ([]string, error) {
	if _, err := r.c.GetServer(ctx); err != nil {
		return nil, fmt.Errorf("Incus is not reachable at %s (%v): install and start Incus", r.c.SocketPath(), err)
	}
	var made []string
	if _, err := r.c.GetStoragePool(ctx, r.pool); incus.IsNotFound(err) {
		if err := r.c.CreateStoragePool(ctx, r.pool, "dir"); err != nil {
			return made, fmt.Errorf("creating storage pool %s: %w", r.pool, err)
		}
		made = append(made, "storage pool "+r.pool+" (dir)")
	} else if err != nil {
		return made, fmt.Errorf("storage pool %s: %w", r.pool, err)
	}
	if _, err := r.c.WithProject("").GetNetwork(ctx, r.network); incus.IsNotFound(err) {
		subnet := spec.Subnet
		if !subnet.IsValid() {
			if subnet, err = r.freeSubnet(ctx, spec.Supernet); err != nil {
				return made, err
			}
		}
		if err := r.createBridge(ctx, subnet); err != nil {
			return made, err
		}
		made = append(made, fmt.Sprintf("network %s (%s, no NAT)", r.network, subnet))
	} else if err != nil {
		return made, fmt.Errorf("network %s: %w", r.network, err)
	}
	if p := r.c.Project(); p != "" {
		if _, err := r.c.GetProject(ctx, p); incus.IsNotFound(err) {
			cfg := map[string]string{"features.images": "false", "features.profiles": "false", "features.networks": "false", "features.storage.volumes": "false"}
			if err := r.c.CreateProject(ctx, p, cfg); err != nil {
				return made, fmt.Errorf("creating project %s: %w", p, err)
			}
			made = append(made, "project "+p)
		} else if err != nil {
			return made, fmt.Errorf("project %s: %w", p, err)
		}
	}
	return made, nil
}

// createBridge makes the server's bridge on subnet: the gateway is its first
// address, DHCP hands out .50-.250 (the rest is for static addresses), no NAT,
// no IPv6, and dnsmasq resolves nothing upstream but reads skein's file.
func (r *Incus) createBridge(ctx context.Context, subnet netip.Prefix) error {
	if subnet.Bits() != 24 || !subnet.Addr().Is4() {
		return fmt.Errorf("subnet %s: give an IPv4 /24, e.g. 10.77.9.0/24", subnet)
	}
	servers := filepath.Join(DNSDir, r.network+".servers")
	if err := os.MkdirAll(DNSDir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(servers); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(servers, nil, 0o644); err != nil {
			return err
		}
	}
	b := subnet.Masked().Addr().As4()
	at := func(last byte) string { return netip.AddrFrom4([4]byte{b[0], b[1], b[2], last}).String() }
	cfg := map[string]string{
		"ipv4.address":     at(1) + "/24",
		"ipv4.nat":         "false",
		"ipv6.address":     "none",
		"ipv4.dhcp.ranges": at(50) + "-" + at(250),
		"raw.dnsmasq":      "no-resolv\nservers-file=" + servers,
	}
	if err := r.c.CreateNetwork(ctx, r.network, "bridge", cfg); err != nil {
		return fmt.Errorf("creating network %s on %s: %w", r.network, subnet, err)
	}
	return nil
}

// freeSubnet picks a /24 of supernet that no Incus network, host address or
// host route (more specific than the supernet) uses.
func (r *Incus) freeSubnet(ctx context.Context, supernet netip.Prefix) (netip.Prefix, error) {
	var used []netip.Prefix
	nets, err := r.c.GetNetworks(ctx)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("listing networks: %w", err)
	}
	for _, n := range nets {
		if p, err := netip.ParsePrefix(n.Config["ipv4.address"]); err == nil {
			used = append(used, p.Masked())
		}
	}
	used = append(used, hostPrefixes()...)
	return FreeSubnet(supernet, used)
}

// FreeSubnet returns the first /24 of supernet, after its first one, that
// overlaps none of used; prefixes as wide as the supernet or wider (a
// blackhole route for it, a default route) do not count.
func FreeSubnet(supernet netip.Prefix, used []netip.Prefix) (netip.Prefix, error) {
	supernet = supernet.Masked()
	if !supernet.Addr().Is4() || supernet.Bits() > 24 {
		return netip.Prefix{}, fmt.Errorf("supernet %s: give an IPv4 prefix of /24 or wider, e.g. 10.77.0.0/16", supernet)
	}
	n := 1 << (24 - supernet.Bits())
	base := binary.BigEndian.Uint32(supernet.Addr().AsSlice())
	for i := 1; i <= n; i++ {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base+uint32(i%n)<<8)
		cand := netip.PrefixFrom(netip.AddrFrom4(a), 24)
		free := true
		for _, u := range used {
			if u.Bits() > supernet.Bits() && u.Overlaps(cand) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 left in %s: pass --subnet or another --supernet", supernet)
}

// hostPrefixes are the IPv4 prefixes of this machine's addresses and routes.
func hostPrefixes() []netip.Prefix {
	var out []netip.Prefix
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
				out = append(out, p.Masked())
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/route"); err == nil {
		out = append(out, parseRoutes(string(b))...)
	}
	return out
}

// parseRoutes reads /proc/net/route: destination and mask in little-endian hex.
func parseRoutes(table string) []netip.Prefix {
	var out []netip.Prefix
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		dst, err1 := hex.DecodeString(f[1])
		mask, err2 := hex.DecodeString(f[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			continue
		}
		// Little-endian on the wire of this file: reverse into network order.
		d := [4]byte{dst[3], dst[2], dst[1], dst[0]}
		m := net.IPv4Mask(mask[3], mask[2], mask[1], mask[0])
		ones, bits := m.Size()
		if bits == 0 {
			continue
		}
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(d), ones).Masked())
	}
	return out
}
