// Package httpd runs skein's small HTTP servers (the metrics, the dashboard)
// until their context ends.
package httpd

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// Serve serves h on l until ctx ends. Requests' contexts end with ctx, so
// long-lived streams stop with the server.
func Serve(ctx context.Context, l net.Listener, h http.Handler, log zerolog.Logger, what string) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg(what)
		}
	}()
}
