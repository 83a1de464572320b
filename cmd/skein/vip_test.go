package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/skeinhq/skein/events"
)

// A floating IP that is a server's own address is refused naming that server.
func TestFloatingIPThatIsAServersAddressIsRefused(t *testing.T) {
	hbs := []events.Heartbeat{
		{Name: "s1", Interfaces: []events.HostInterface{{Name: "eth0", Addr: "10.0.0.11/24"}}},
		{Name: "s3", Interfaces: []events.HostInterface{{Name: "lan", Addr: "10.0.0.13/24"}}},
	}
	network := netip.MustParsePrefix("10.0.0.0/24")
	err := notAServersAddress(netip.MustParseAddr("10.0.0.13"), network, hbs)
	if err == nil || err.Error() != "10.0.0.13 is the address of server s3 (lan): pick a free address in 10.0.0.0/24" {
		t.Errorf("got %v", err)
	}
	if err := notAServersAddress(netip.MustParseAddr("10.0.0.50"), network, hbs); err != nil {
		t.Errorf("a free address: %v", err)
	}
	if err := notAServersAddress(netip.MustParseAddr("10.0.0.11"), network, hbs); err == nil || !strings.Contains(err.Error(), "server s1") {
		t.Errorf("s1's address: %v", err)
	}
}
