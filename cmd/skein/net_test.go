package main

import (
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
)

// A WireGuard peer's state says its last handshake, the bytes through the
// tunnel and, behind a NAT, where the device hears it from.
func TestTunnelText(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	hs := now.Add(-12400 * time.Millisecond)
	for _, tc := range []struct {
		peer events.MeshPeer
		want string
	}{
		{events.MeshPeer{Via: "203.0.113.2:51820"}, "no handshake yet, rx 0 B, tx 0 B"},
		{events.MeshPeer{Via: "203.0.113.2:51820", Endpoint: "203.0.113.2:51820", Handshake: &hs, RxBytes: 1536, TxBytes: 3 << 30},
			"handshake 12s ago, rx 1.5 KiB, tx 3.00 GiB"},
		{events.MeshPeer{Via: "203.0.113.2:51820", Endpoint: "198.51.100.7:40123", Handshake: &hs, RxBytes: 5 << 20, TxBytes: 92},
			"handshake 12s ago, rx 5.0 MiB, tx 92 B, heard from 198.51.100.7:40123"},
	} {
		if got := tunnelText(tc.peer, now); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}
