package lb

import (
	"fmt"
	"testing"

	"github.com/skeinhq/skein/events"
)

// TestBackendDiff: lb.changed names the backends added (or moved to another
// address) and removed, so that a subscriber sees every change.
func TestBackendDiff(t *testing.T) {
	b := func(name, host string, port int) events.Backend {
		return events.Backend{Name: name, Host: host, Port: port}
	}
	old := []events.Backend{b("a", "10.0.0.1", 80), b("b", "10.0.0.2", 80), b("c", "10.0.0.3", 80)}
	next := []events.Backend{b("a", "10.0.0.1", 80), b("b", "10.0.0.2", 8080), b("d", "10.0.0.4", 80)}
	added, removed := backendDiff(old, next)
	if fmt.Sprint(added) != "[b d]" || fmt.Sprint(removed) != "[c]" {
		t.Errorf("added %v removed %v, want [b d] and [c]", added, removed)
	}
	if added, removed := backendDiff(old, old); len(added)+len(removed) != 0 {
		t.Errorf("no change: added %v removed %v", added, removed)
	}
}
