package workers

import (
	"testing"
	"time"
)

// TestRecentIDsAdmitAFreshCommandOnce: a command is fresh once, while young
// and made since the runtime started; a copy of it, an old one, one made
// before the start or ahead of the clock is looked up instead.
func TestRecentIDsAdmitAFreshCommandOnce(t *testing.T) {
	var r recentIDs
	started := time.Now().Add(-time.Minute)
	now := time.Now()
	if !r.admit("a", now, started) {
		t.Fatal("a young command is not fresh")
	}
	if r.admit("a", now, started) {
		t.Error("its copy is fresh too")
	}
	for name, made := range map[string]time.Time{
		"old":            now.Add(-freshWindow - time.Second),
		"before start":   started.Add(-time.Second),
		"ahead of clock": now.Add(freshSkew + time.Second),
	} {
		if r.admit("b-"+name, made, started) {
			t.Errorf("%s: fresh", name)
		}
	}
}
