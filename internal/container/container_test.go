package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSubnetContains(t *testing.T) {
	s24 := Subnet{Prefix: netip.MustParsePrefix("10.77.9.0/24"), Gateway: netip.MustParseAddr("10.77.9.1")}
	s16 := Subnet{Prefix: netip.MustParsePrefix("172.20.0.0/16"), Gateway: netip.MustParseAddr("172.20.255.254")}
	s30 := Subnet{Prefix: netip.MustParsePrefix("192.168.5.4/30"), Gateway: netip.MustParseAddr("192.168.5.5")}
	// A prefix written with host bits set, as a user might configure it.
	loose := Subnet{Prefix: netip.MustParsePrefix("10.77.9.77/24"), Gateway: netip.MustParseAddr("10.77.9.1")}
	tests := []struct {
		name string
		s    Subnet
		ip   string
		want bool
	}{
		{"network", s24, "10.77.9.0", false},
		{"broadcast", s24, "10.77.9.255", false},
		{"gateway", s24, "10.77.9.1", false},
		{"first usable", s24, "10.77.9.2", true},
		{"inside", s24, "10.77.9.50", true},
		{"last usable", s24, "10.77.9.254", true},
		{"outside below", s24, "10.77.8.255", false},
		{"outside above", s24, "10.77.10.0", false},
		{"far outside", s24, "192.168.1.10", false},
		{"IPv6", s24, "fd00::10", false},
		{"IPv4-mapped IPv6", s24, "::ffff:10.77.9.50", false},
		{"/16 network", s16, "172.20.0.0", false},
		{"/16 broadcast", s16, "172.20.255.255", false},
		{"/16 gateway at the top", s16, "172.20.255.254", false},
		{"/16 .1 is usable when not the gateway", s16, "172.20.0.1", true},
		{"/16 inside, .255 of an inner /24", s16, "172.20.3.255", true},
		{"/16 inside, .0 of an inner /24", s16, "172.20.4.0", true},
		{"/30 network", s30, "192.168.5.4", false},
		{"/30 gateway", s30, "192.168.5.5", false},
		{"/30 only host", s30, "192.168.5.6", true},
		{"/30 broadcast", s30, "192.168.5.7", false},
		{"unmasked prefix: network", loose, "10.77.9.0", false},
		{"unmasked prefix: broadcast", loose, "10.77.9.255", false},
		{"unmasked prefix: inside", loose, "10.77.9.77", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.Contains(netip.MustParseAddr(tc.ip)); got != tc.want {
				t.Errorf("%s contains %s = %v, want %v", tc.s.Prefix, tc.ip, got, tc.want)
			}
		})
	}
}

func TestIsPermanent(t *testing.T) {
	perm := &PermanentError{Err: errors.New("already exists")}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"permanent", perm, true},
		{"wrapped permanent", fmt.Errorf("create web: %w", perm), true},
		{"plain", errors.New("connection refused"), false},
		{"not found", ErrNotFound, false},
		{"nil", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsPermanent(tc.err); got != tc.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
	if !errors.Is(fmt.Errorf("x: %w", &PermanentError{Err: ErrNotFound}), ErrNotFound) {
		t.Error("PermanentError does not unwrap to its cause")
	}
}

// TestFakeSubnetAndAddresses pins what the worker tests rely on: the gateway is
// the first address and started containers get usable addresses in the subnet.
func TestFakeSubnetAndAddresses(t *testing.T) {
	ctx := context.Background()
	f := NewFake("10.77.9.0/24", "img")
	sn, err := f.Subnet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sn.Prefix.String() != "10.77.9.0/24" || sn.Gateway.String() != "10.77.9.1" {
		t.Errorf("subnet = %s gateway %s", sn.Prefix, sn.Gateway)
	}
	for _, name := range []string{"a", "b"} {
		if err := f.Create(ctx, CreateSpec{Name: name, Image: "img"}); err != nil {
			t.Fatal(err)
		}
		if err := f.Start(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := f.Get(ctx, "a")
	b, _ := f.Get(ctx, "b")
	for _, i := range []*Instance{a, b} {
		if !sn.Contains(netip.MustParseAddr(i.IPv4)) {
			t.Errorf("%s got unusable address %s", i.Name, i.IPv4)
		}
	}
	if a.IPv4 == b.IPv4 {
		t.Errorf("two containers share %s", a.IPv4)
	}
	if err := f.Create(ctx, CreateSpec{Name: "a", Image: "img"}); !IsPermanent(err) {
		t.Errorf("creating a duplicate = %v, want a permanent error", err)
	}
	if err := f.Create(ctx, CreateSpec{Name: "c", Image: "nope"}); !IsPermanent(err) {
		t.Errorf("creating from a missing image = %v, want a permanent error", err)
	}
	if _, err := f.Get(ctx, "zz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a missing container = %v, want ErrNotFound", err)
	}
}

// The fake's streamed files: what PushFileFrom read comes back by PullFile,
// a body cut short leaves its part as Incus does, a missing file or
// container is ErrNotFound.
func TestFakeStreamsFiles(t *testing.T) {
	ctx := context.Background()
	f := NewFake("10.77.9.0/24", "img")
	if err := f.Create(ctx, CreateSpec{Name: "c1", Image: "img"}); err != nil {
		t.Fatal(err)
	}
	if err := f.PushFileFrom(ctx, "c1", "/var/tmp/f", strings.NewReader("dump"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, size, err := f.PullFile(ctx, "c1", "/var/tmp/f")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	if string(got) != "dump" || size != 4 {
		t.Fatalf("pulled %q, size %d", got, size)
	}
	cut := io.MultiReader(strings.NewReader("par"), iotest.ErrReader(errors.New("cut")))
	if err := f.PushFileFrom(ctx, "c1", "/var/tmp/g", cut, 0o600); err == nil || string(f.Files["c1:/var/tmp/g"]) != "par" {
		t.Fatalf("a body cut short: %v, left %q", err, f.Files["c1:/var/tmp/g"])
	}
	if _, _, err := f.PullFile(ctx, "c1", "/nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a missing file: %v", err)
	}
	if _, _, err := f.PullFile(ctx, "c2", "/var/tmp/f"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a missing container: %v", err)
	}
}
