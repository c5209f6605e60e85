package cli

import (
	"context"
	"errors"
	"net"

	"github.com/ustack/ustack/app"
)

// running is an ACK server serving a set of listeners.
type running struct {
	srv  *app.Server
	errc chan error
	n    int
}

// startServer serves srv on every listener, each on its own goroutine.
func startServer(srv *app.Server, lns []net.Listener) *running {
	r := &running{srv: srv, errc: make(chan error, len(lns)), n: len(lns)}
	for _, ln := range lns {
		go func() { r.errc <- srv.Serve(ln) }()
	}
	return r
}

// stop closes the listeners, lets open connections finish for shutdownGrace,
// closes the rest, and waits for every Serve to return. It returns the first
// error a Serve returned.
func (r *running) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := r.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = nil // connections still open after the grace period were closed: expected
	}
	for range r.n {
		if e := <-r.errc; e != nil && err == nil {
			err = e
		}
	}
	return err
}
