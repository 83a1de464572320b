package main

import (
	"strings"
	"testing"
)

// --subnet and --supernet are checked before anything is made.
func TestPrepareFlags(t *testing.T) {
	ok := agentFlags{supernet: "10.77.0.0/16", subnet: "10.77.9.0/24"}
	spec, err := ok.prepareSpec()
	if err != nil || spec.Subnet.String() != "10.77.9.0/24" || spec.Supernet.String() != "10.77.0.0/16" {
		t.Fatalf("good flags: %+v %v", spec, err)
	}
	for _, bad := range []agentFlags{
		{supernet: "10.77.0.0/25"},
		{supernet: "fd00::/48"},
		{supernet: "nope"},
		{supernet: "10.77.0.0/16", subnet: "10.77.9.0/23"},
		{supernet: "10.77.0.0/16", subnet: "10.77.9.7/24"},
		{supernet: "10.77.0.0/16", subnet: "10.77.9.0/24\nraw.dnsmasq=x"},
	} {
		if _, err := bad.prepareSpec(); err == nil || !strings.Contains(err.Error(), "e.g.") && !strings.Contains(err.Error(), "such as") {
			t.Errorf("%+v accepted or without an example: %v", bad, err)
		}
	}
}
