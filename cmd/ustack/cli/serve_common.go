package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/ustack/ustack/app"
)

// appStack is what the apps run on: the userspace stack or the kernel's.
type appStack struct {
	name      string // for the HTTP page: "gVisor netstack (userspace)" or "the kernel"
	listen    func(port uint16) ([]net.Listener, error)
	listenUDP func(port uint16) ([]net.PacketConn, error)
	connInfo  func(local, remote net.Addr) []app.KV // nil: none
}

// running is the apps of --serve, each serving its listeners.
type running struct {
	services []app.Service
	udp      []*app.UDPServer
	errc     chan error
	n        int // Serve calls still running
	closers  []io.Closer
}

// startApps listens for every app of specs on st and starts serving. On an
// error it closes what it opened.
func startApps(specs []serviceSpec, st appStack, opts app.ServerOptions) (_ *running, err error) {
	r := &running{errc: make(chan error, 64)}
	defer func() {
		if err != nil {
			for _, c := range r.closers {
				c.Close()
			}
		}
	}()
	type job struct {
		svc app.Service
		lns []net.Listener
	}
	var jobs []job
	type udpJob struct {
		srv *app.UDPServer
		pcs []net.PacketConn
	}
	var udpJobs []udpJob
	for _, spec := range specs {
		lns, err := st.listen(spec.port)
		if err != nil {
			return nil, usageErrorf("%s on port %d: %v", spec.kind, spec.port, err)
		}
		for _, ln := range lns {
			r.closers = append(r.closers, ln)
		}
		var svc app.Service
		switch spec.kind {
		case "ack":
			svc = app.NewServer(opts)
			pcs, err := st.listenUDP(spec.port)
			if err != nil {
				return nil, usageErrorf("UDP ack on port %d: %v", spec.port, err)
			}
			for _, pc := range pcs {
				r.closers = append(r.closers, pc)
			}
			udpJobs = append(udpJobs, udpJob{app.NewUDPServer(opts), pcs})
		case "echo":
			svc = app.NewEchoServer(opts)
		case "discard":
			svc = app.NewDiscardServer(opts)
		case "chargen":
			svc = app.NewChargenServer(opts)
		case "http":
			svc = app.NewHTTPServer(app.HTTPOptions{ServerOptions: opts, StackName: st.name, ConnInfo: st.connInfo})
		default:
			return nil, fmt.Errorf("unknown app %q", spec.kind)
		}
		jobs = append(jobs, job{svc, lns})
	}
	for _, j := range jobs {
		r.services = append(r.services, j.svc)
		for _, ln := range j.lns {
			r.n++
			go func() { r.errc <- j.svc.Serve(ln) }()
		}
	}
	for _, j := range udpJobs {
		r.udp = append(r.udp, j.srv)
		for _, pc := range j.pcs {
			r.n++
			go func() { r.errc <- j.srv.Serve(pc) }()
		}
	}
	return r, nil
}

// stop closes the listeners, lets open connections finish for shutdownGrace,
// closes the rest, and waits for every Serve to return. It returns the first
// error a Serve returned.
func (r *running) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(r.services)+len(r.udp))
	for _, s := range r.services {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- s.Shutdown(ctx) }()
	}
	for _, s := range r.udp {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- s.Shutdown(ctx) }()
	}
	wg.Wait()
	close(errs)
	var err error
	for e := range errs {
		if e != nil && !errors.Is(e, context.DeadlineExceeded) && err == nil {
			// Connections still open after the grace period were
			// closed: expected, not an error.
			err = e
		}
	}
	for range r.n {
		if e := <-r.errc; e != nil && err == nil {
			err = e
		}
	}
	return err
}

// readyLines says what serves where, and how to try it.
func readyLines(specs []serviceSpec, where string, host netip.Addr) []string {
	var lines []string
	hp := func(port uint16) string { return host.String() + " " + strconv.Itoa(int(port)) }
	for _, s := range specs {
		switch s.kind {
		case "ack":
			lines = append(lines,
				fmt.Sprintf("TCP Server running on port %d (%s)   try: nc %s   ping %s", s.port, where, hp(s.port), host),
				fmt.Sprintf("UDP ACK server on port %d (%s)   try: nc -u %s", s.port, where, hp(s.port)))
		case "http":
			url := "http://" + netip.AddrPortFrom(host, s.port).String() + "/"
			if s.port == 80 {
				url = "http://" + host.String() + "/"
				if host.Is6() {
					url = "http://[" + host.String() + "]/"
				}
			}
			lines = append(lines, fmt.Sprintf("http on port %d (%s)   try: curl %s", s.port, where, url))
		default:
			lines = append(lines, fmt.Sprintf("%s on port %d (%s)   try: nc %s", s.kind, s.port, where, hp(s.port)))
		}
	}
	return lines
}
