package main

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// Metrics are plain HTTP without a login: refused beyond loopback, with the fix.
func TestMetricsOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9464", ":9464", "10.0.0.5:9464", "nohost"} {
		if err := serveMetrics(t.Context(), addr, nil, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "loopback only") {
			t.Errorf("--metrics %s: %v", addr, err)
		}
	}
}
