package app

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The shared behaviour of every TCP service (Service), tested once for all of
// them: each service is a row of serviceCases, and runServiceConformance runs
// the same tests on each. The environment (where to listen, how to dial) is a
// parameter, so that the same table can run on netstack as well as on the
// kernel's loopback used here.

// serviceEnv is where the shared tests run a service.
type serviceEnv struct {
	listen func(t *testing.T) net.Listener
	dial   func(t *testing.T, addr string) net.Conn
}

// kernelEnv serves on 127.0.0.1 with the kernel's TCP.
var kernelEnv = serviceEnv{
	listen: func(t *testing.T) net.Listener {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	},
	dial: func(t *testing.T, addr string) net.Conn {
		t.Helper()
		return dial(t, addr)
	},
}

// serviceCase is one service as the shared tests see it.
type serviceCase struct {
	name string
	new  func(ServerOptions) Service
	// converse runs a short exchange on c and fails the test unless the
	// service answers as it should. It may be called again on the same c.
	converse func(t *testing.T, c net.Conn)
	// idleLog is part of the line the service logs when it drops an idle
	// client; "": none (net/http closes silently).
	idleLog string
	// shutdownWaits: Shutdown waits for the clients of this service to leave
	// (they are in a conversation the server cannot end); otherwise it ends
	// the connections itself (chargen's stream, HTTP's idle keep-alives).
	shutdownWaits bool
}

func serviceCases() []serviceCase {
	return []serviceCase{
		{
			name:          "ack",
			new:           func(o ServerOptions) Service { return NewServer(o) },
			converse:      func(t *testing.T, c net.Conn) { ping(t, c, "hello") },
			idleLog:       "Client idle for 200ms, closing",
			shutdownWaits: true,
		},
		{
			name:          "echo",
			new:           func(o ServerOptions) Service { return NewEchoServer(o) },
			converse:      converseEcho,
			idleLog:       "Client idle for 200ms, closing",
			shutdownWaits: true,
		},
		{
			name:          "discard",
			new:           func(o ServerOptions) Service { return NewDiscardServer(o) },
			converse:      converseDiscard,
			idleLog:       "Client idle for 200ms, closing",
			shutdownWaits: true,
		},
		{
			name:     "chargen",
			new:      func(o ServerOptions) Service { return NewChargenServer(o) },
			converse: converseChargen,
			// A chargen client that sends nothing is normal; one that does
			// not read is idle (once the buffers between are full).
			idleLog: "Client not reading for 200ms, closing",
		},
		{
			name:     "http",
			new:      func(o ServerOptions) Service { return NewHTTPServer(HTTPOptions{ServerOptions: o}) },
			converse: converseHTTP,
		},
	}
}

func converseEcho(t *testing.T, c net.Conn) {
	t.Helper()
	const msg = "hello, echo\r\n\x00\xff"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
	}
}

// converseDiscard sends a line and checks that nothing comes back and the
// connection stays open.
func converseDiscard(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "into the void\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	defer c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !isTimeout(err) {
		t.Fatalf("discard: Read = %d, %v; want nothing and the connection open", n, err)
	}
}

// converseChargen reads a little and checks that it is a piece of RFC 864's
// pattern (from wherever the stream is).
func converseChargen(t *testing.T, c net.Conn) {
	t.Helper()
	got := make([]byte, 300)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("chargen: %v", err)
	}
	if !bytes.Contains(rfc864(2*chargenPeriod+len(got)), got) {
		t.Fatalf("chargen: %q is not part of RFC 864's pattern", got)
	}
}

// converseHTTP gets / on c, keeping the connection alive.
func converseHTTP(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("http: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "You are 127.0.0.1 port "+localPort(c)) {
		t.Fatalf("http: %s, %v:\n%s", resp.Status, err, body)
	}
}

func TestServiceConformance(t *testing.T) {
	for _, sc := range serviceCases() {
		t.Run(sc.name, func(t *testing.T) { runServiceConformance(t, kernelEnv, sc) })
	}
}

// startService serves s on a fresh listener from env. At cleanup it closes s
// and checks that Serve returned nil.
func startService(t *testing.T, env serviceEnv, s Service) string {
	t.Helper()
	return serveListener(t, s, env.listen(t))
}

// drain reads c until it ends and reports how: nil for EOF or a reset (the
// server closed it), or the error; a hung read fails after 5s.
func drain(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if err != nil && !isTimeout(err) {
		return nil // a reset: the server closed with our data unread
	}
	return err
}

func runServiceConformance(t *testing.T, env serviceEnv, sc serviceCase) {
	t.Run("converse", func(t *testing.T) {
		checkNoLeaks(t)
		s := sc.new(ServerOptions{Logger: discardLogger()})
		addr := startService(t, env, s)
		c := env.dial(t, addr)
		sc.converse(t, c)
		sc.converse(t, c)
		if n := s.ActiveConns(); n != 1 {
			t.Errorf("ActiveConns = %d, want 1", n)
		}
		c.Close()
		waitConns(t, s, 0)
	})

	t.Run("many clients", func(t *testing.T) {
		checkNoLeaks(t)
		s := sc.new(ServerOptions{Logger: discardLogger()})
		addr := startService(t, env, s)
		t.Run("group", func(t *testing.T) {
			for i := range 20 {
				t.Run(fmt.Sprint(i), func(t *testing.T) {
					t.Parallel()
					c := env.dial(t, addr)
					sc.converse(t, c)
					sc.converse(t, c)
					c.Close()
				})
			}
		})
		waitConns(t, s, 0)
	})

	t.Run("idle timeout", func(t *testing.T) {
		checkNoLeaks(t)
		var logs logBuffer
		s := sc.new(ServerOptions{Logger: newLogger(&logs), IdleTimeout: 200 * time.Millisecond})
		addr := startService(t, env, s)
		// The clock starts before the dial: the server's idle timer starts
		// after it, so the drop can come no sooner than the timeout, even
		// if this goroutine is not scheduled for a while after the dial.
		start := time.Now()
		c := env.dial(t, addr) // and then neither send nor read
		waitConns(t, s, 1)
		waitConns(t, s, 0)
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("idle client dropped after %v, want about 200ms", d)
		}
		if sc.idleLog != "" {
			logs.waitFor(t, sc.idleLog, "client=127.0.0.1:"+localPort(c))
		}
		if err := drain(c); err != nil {
			t.Errorf("idle client: %v; want the connection closed", err)
		}
	})

	t.Run("connection limit", func(t *testing.T) {
		checkNoLeaks(t)
		var logs logBuffer
		s := sc.new(ServerOptions{Logger: newLogger(&logs), MaxConns: 2})
		addr := startService(t, env, s)
		c1, c2 := env.dial(t, addr), env.dial(t, addr)
		sc.converse(t, c1)
		sc.converse(t, c2)

		c3 := env.dial(t, addr)
		c3.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c3.Read(make([]byte, 1))
		if n != 0 || err == nil || isTimeout(err) {
			t.Fatalf("third client: Read = %d, %v; want it closed by the server", n, err)
		}
		logs.waitFor(t, "level=WARN", fmt.Sprintf("Refusing client 127.0.0.1 %s: connection limit 2 reached", localPort(c3)))
		if got := s.ActiveConns(); got != 2 {
			t.Errorf("ActiveConns = %d, want 2", got)
		}

		c1.Close()
		waitConns(t, s, 1)
		c4 := env.dial(t, addr)
		sc.converse(t, c4)
		sc.converse(t, c2)
	})

	t.Run("shutdown with clients", func(t *testing.T) {
		checkNoLeaks(t)
		ln := env.listen(t)
		s := sc.new(ServerOptions{Logger: discardLogger()})
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		// The clients read until the server closes, then close too.
		var wg sync.WaitGroup
		ended := make(chan error, 2)
		for range 2 {
			c := env.dial(t, ln.Addr().String())
			sc.converse(t, c)
			wg.Go(func() {
				ended <- drain(c)
				c.Close()
			})
		}

		grace := 5 * time.Second
		if sc.shutdownWaits {
			grace = 200 * time.Millisecond // the clients stay: Shutdown closes them when this runs out
		}
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		start := time.Now()
		err := s.Shutdown(ctx)
		d := time.Since(start)
		switch {
		case sc.shutdownWaits && !errors.Is(err, context.DeadlineExceeded):
			t.Errorf("Shutdown = %v, want context.DeadlineExceeded (clients still connected)", err)
		case sc.shutdownWaits && d < 150*time.Millisecond:
			t.Errorf("Shutdown returned after %v, before its grace of %v", d, grace)
		case !sc.shutdownWaits && err != nil:
			t.Errorf("Shutdown = %v, want nil: the server ends these connections itself", err)
		}
		if d > grace+2*time.Second {
			t.Errorf("Shutdown took %v", d)
		}
		if n := s.ActiveConns(); n != 0 {
			t.Errorf("ActiveConns = %d after Shutdown", n)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve = %v, want nil", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Serve did not return")
		}
		wg.Wait()
		close(ended)
		for err := range ended {
			if err != nil {
				t.Errorf("client after Shutdown: %v; want the connection closed", err)
			}
		}
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
			c.Close()
			t.Error("listener still accepting after Shutdown")
		}
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("second Shutdown = %v", err)
		}
	})

	t.Run("graceful shutdown", func(t *testing.T) {
		checkNoLeaks(t)
		ln := env.listen(t)
		s := sc.new(ServerOptions{Logger: discardLogger()})
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		c := env.dial(t, ln.Addr().String())
		sc.converse(t, c)

		shutdown := make(chan error, 1)
		go func() { shutdown <- s.Shutdown(context.Background()) }()
		if sc.shutdownWaits {
			// The conversation goes on, and Shutdown waits for it.
			sc.converse(t, c)
			select {
			case err := <-shutdown:
				t.Fatalf("Shutdown returned %v with a client connected", err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		c.Close()
		select {
		case err := <-shutdown:
			if err != nil {
				t.Errorf("Shutdown = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown did not return after the client left")
		}
		if err := <-served; err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	})

	t.Run("serve after shutdown", func(t *testing.T) {
		checkNoLeaks(t)
		s := sc.new(ServerOptions{Logger: discardLogger()})
		if err := s.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		ln := env.listen(t)
		if err := s.Serve(ln); err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve after Close left its listener open: Accept = %v", err)
		}
	})

	t.Run("listener closed", func(t *testing.T) {
		checkNoLeaks(t)
		s := sc.new(ServerOptions{Logger: discardLogger()})
		defer s.Close()
		ln := env.listen(t)
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		c := env.dial(t, ln.Addr().String())
		sc.converse(t, c) // Serve is running
		ln.Close()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve after ln.Close = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after its listener was closed")
		}
		sc.converse(t, c) // open connections are not affected
	})
}
