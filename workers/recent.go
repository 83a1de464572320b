package workers

import (
	"sync"
	"time"
)

// freshWindow is how old a command may be and still skip the lookup of an
// earlier result on its first delivery; freshSkew how far ahead of this
// machine's clock its client's may be.
const (
	freshWindow = 10 * time.Second
	freshSkew   = time.Second
)

// recentIDs are the ids of the commands taken as fresh lately. A fresh
// command's MAC is genuine, but its copy can be had stored again by
// another server (JetStream publishes stored messages where a reader asks):
// an id is fresh once, and only while it is young, so that a copy finds the
// first's result instead of running again.
type recentIDs struct {
	mu        sync.Mutex
	cur, prev map[string]struct{}
	rotated   time.Time
}

// admit says whether the command id, made at made, is fresh: young, made
// since this runtime started, and not admitted before. Ids are kept at least
// freshWindow+freshSkew, as long as a command can be young.
func (r *recentIDs) admit(id string, made, started time.Time) bool {
	now := time.Now()
	if made.Before(started) || made.Before(now.Add(-freshWindow)) || made.After(now.Add(freshSkew)) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.rotated) >= freshWindow+freshSkew {
		r.prev, r.cur, r.rotated = r.cur, map[string]struct{}{}, now
	}
	if _, ok := r.cur[id]; ok {
		return false
	}
	if _, ok := r.prev[id]; ok {
		return false
	}
	r.cur[id] = struct{}{}
	return true
}
