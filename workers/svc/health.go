package svc

import "sync"

// Health is the health of this server's services as its own checks see them:
// the discovery worker, which runs the checks, writes it; other capabilities
// (a floating IP that follows a local service) read it. The zero value is
// ready to use and knows nothing.
type Health struct {
	mu    sync.Mutex
	known bool
	up    map[string]bool
}

// Set replaces what is known: for each service that has an instance on this
// server, whether one of them passes all its checks.
func (h *Health) Set(up map[string]bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.known, h.up = true, up
}

// Service says whether an instance of the service on this server passes all
// its checks; known is false until the discovery worker has read what runs
// here, so that a reader keeps its last decision instead of acting on nothing.
func (h *Health) Service(name string) (up, known bool) {
	if h == nil {
		return false, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.up[name], h.known
}
