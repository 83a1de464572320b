// Package incus is a small typed client for the Incus REST API (1.0) over its local unix socket, shaped like the official client so code can move to it later.
package incus
