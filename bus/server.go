package bus

import (
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerOptions configures the embedded NATS server.
type ServerOptions struct {
	// DataDir holds JetStream's file storage under DataDir/jetstream.
	DataDir string
	// Listen is the client address, HOST:PORT; port 0 picks a free one.
	Listen string
	// Name is the NATS server name; keep it stable so JetStream finds its data again.
	Name string
	// Authority, when set, is trusted and required of every client.
	Authority *Authority
	// TLS, when set, is required of every client.
	TLS *tls.Config
}

// StartServer runs an embedded nats-server with JetStream and waits until it accepts clients.
func StartServer(o ServerOptions) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("bus: --listen %q: want HOST:PORT, e.g. 127.0.0.1:4222", o.Listen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("bus: --listen %q: bad port", o.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if o.Name == "" {
		o.Name = "skein"
	}
	opts := &server.Options{
		ServerName: o.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(o.DataDir, "jetstream"),
		NoSigs:     true,
		// A restarted server must not wait for clients still holding the old port.
		MaxPayload: 8 << 20,
	}
	if o.Authority != nil {
		if err := o.Authority.Configure(opts); err != nil {
			return nil, fmt.Errorf("bus: the authority: %w", err)
		}
	}
	if o.TLS != nil {
		opts.TLSConfig, opts.TLS, opts.TLSTimeout = o.TLS, true, 5
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("bus: nats server on %s did not become ready (port in use?)", o.Listen)
	}
	return ns, nil
}
