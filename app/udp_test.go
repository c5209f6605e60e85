package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// startUDPServer serves on a fresh 127.0.0.1 PacketConn. At cleanup it closes
// the server and checks that Serve returned nil.
func startUDPServer(t *testing.T, opts ServerOptions) (*UDPServer, string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	s := NewUDPServer(opts)
	serveInTest(t, func() error { return s.Serve(pc) }, s.Close)
	return s, pc.LocalAddr().String()
}

func dialUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.UDPConn)
}

// exchange sends one datagram and returns the reply.
func exchange(t *testing.T, c net.Conn, msg []byte) []byte {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 70000)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply to %.40q: %v", msg, err)
	}
	return buf[:n]
}

func TestUDPServer(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	_, addr := startUDPServer(t, ServerOptions{Logger: newLogger(&logs)})
	c := dialUDP(t, addr)
	port := localPort(c)
	for _, tt := range []struct{ send, want, logged string }{
		{"hello\n", "ACK: hello\n", `msg="Received: hello from 127.0.0.1 ` + port + `"`},
		{"crlf\r\n", "ACK: crlf\r\n", `msg="Received: crlf from 127.0.0.1 ` + port + `"`},
		{"no newline", "ACK: no newline", `msg="Received: no newline from 127.0.0.1 ` + port + `"`},
		{"two\nlines\n", "ACK: two\nlines\n", `msg="Received: two\nlines from 127.0.0.1 ` + port + `"`},
		{"", "ACK: ", `msg="Received:  from 127.0.0.1 ` + port + `"`},
	} {
		if got := exchange(t, c, []byte(tt.send)); string(got) != tt.want {
			t.Errorf("sent %q, got %q, want %q", tt.send, got, tt.want)
		}
		logs.waitFor(t, "level=INFO", tt.logged, "client=127.0.0.1:"+port)
	}
}

// Datagrams near UDP's limit: a reply that would be longer than MaxUDPPayload
// is cut to it, and the log says so; the "Received:" line stays short.
func TestUDPServerLongDatagram(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	_, addr := startUDPServer(t, ServerOptions{Logger: newLogger(&logs)})
	c := dialUDP(t, addr)
	c.SetReadBuffer(1 << 20)

	fits := bytes.Repeat([]byte("f"), MaxUDPPayload-len("ACK: "))
	if got := exchange(t, c, fits); !bytes.Equal(got, append([]byte("ACK: "), fits...)) {
		t.Errorf("reply to %d bytes: %d bytes", len(fits), len(got))
	}
	if strings.Contains(logs.String(), "cut") {
		t.Errorf("a reply that fits was cut:\n%s", logs.String())
	}

	long := bytes.Repeat([]byte("0123456789"), MaxUDPPayload/10)
	long = append(long, "0123456"...) // MaxUDPPayload bytes
	got := exchange(t, c, long)
	if want := append([]byte("ACK: "), long[:MaxUDPPayload-5]...); !bytes.Equal(got, want) {
		t.Errorf("reply to %d bytes: %d bytes, want %d (cut)", len(long), len(got), len(want))
	}
	logs.waitFor(t, "Reply to 127.0.0.1 "+localPort(c)+" cut to 65507 bytes", "(the datagram had 65507)")
	l := logs.waitFor(t, "Received: 0123456789", "… (65507 bytes) from 127.0.0.1")
	if len(l) > 400 {
		t.Errorf("log line of %d bytes", len(l))
	}
}

func TestUDPServerManyClients(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startUDPServer(t, ServerOptions{})
	var clients []*net.UDPConn
	for range 10 {
		clients = append(clients, dialUDP(t, addr))
	}
	for round := range 3 {
		for i, c := range clients {
			msg := fmt.Sprintf("client %d round %d\n", i, round)
			if got := exchange(t, c, []byte(msg)); string(got) != "ACK: "+msg {
				t.Errorf("got %q for %q", got, msg)
			}
		}
	}
}

func TestUDPServerShutdown(t *testing.T) {
	checkNoLeaks(t)
	s := NewUDPServer(ServerOptions{Logger: discardLogger()})
	var pcs []net.PacketConn
	served := make(chan error, 2)
	for _, a := range []string{"127.0.0.1:0", "[::1]:0"} {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			t.Logf("skipping %s: %v", a, err)
			continue
		}
		pcs = append(pcs, pc)
		go func() { served <- s.Serve(pc) }()
	}
	for _, pc := range pcs {
		c := dialUDP(t, pc.LocalAddr().String())
		if got := exchange(t, c, []byte("before\n")); string(got) != "ACK: before\n" {
			t.Errorf("got %q", got)
		}
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	for range pcs {
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve = %v, want nil", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Serve did not return after Shutdown")
		}
	}
	for _, pc := range pcs {
		if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("PacketConn not closed by Shutdown: ReadFrom = %v", err)
		}
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after Shutdown = %v", err)
	}

	// Serve after Shutdown closes its PacketConn and returns nil.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(pc); err != nil {
		t.Errorf("Serve after Shutdown = %v", err)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Shutdown left its PacketConn open: ReadFrom = %v", err)
	}
}

// Serve returns nil when its PacketConn is closed from outside, and the read
// error otherwise.
func TestUDPServerPacketConnErrors(t *testing.T) {
	checkNoLeaks(t)
	s := NewUDPServer(ServerOptions{Logger: discardLogger()})
	defer s.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(pc) }()
	exchange(t, dialUDP(t, pc.LocalAddr().String()), []byte("x"))
	pc.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve after pc.Close = %v, want nil", err)
	}

	broken := errors.New("socket broke")
	if err := s.Serve(&failingPacketConn{err: broken}); !errors.Is(err, broken) {
		t.Errorf("Serve = %v, want it to wrap %v", err, broken)
	}
}

type failingPacketConn struct {
	net.PacketConn
	err error
}

func (c *failingPacketConn) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, c.err }
func (c *failingPacketConn) LocalAddr() net.Addr                    { return pipeAddr{} }
func (c *failingPacketConn) Close() error                           { return nil }

func TestRunUDPClient(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startUDPServer(t, ServerOptions{})
	conn := dialUDP(t, addr)
	var out bytes.Buffer
	err := RunUDPClient(context.Background(), conn, strings.NewReader("a\n\nb c\r\nlast"), ClientOptions{Out: &out})
	if err != nil {
		t.Fatalf("RunUDPClient: %v", err)
	}
	want := "Sending to " + addr + " over UDP\n" +
		"Server says: ACK: a\nServer says: ACK: \nServer says: ACK: b c\nServer says: ACK: last\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
	if _, err := conn.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("conn not closed after RunUDPClient: Write = %v", err)
	}
}

// Typed lines go out one by one, each reply printed before the next line.
func TestRunUDPClientInteractive(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startUDPServer(t, ServerOptions{})
	stdin, typing := io.Pipe()
	out := newNotifyWriter()
	done := make(chan error, 1)
	go func() { done <- RunUDPClient(context.Background(), dialUDP(t, addr), stdin, ClientOptions{Out: out}) }()
	io.WriteString(typing, "first\n")
	out.waitFor(t, "Server says: ACK: first\n")
	io.WriteString(typing, "second\n")
	out.waitFor(t, "Server says: ACK: second\n")
	typing.Close()
	if err := <-done; err != nil {
		t.Fatalf("RunUDPClient: %v", err)
	}
}

// A line longer than a datagram can carry goes out in pieces.
func TestRunUDPClientLongLine(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startUDPServer(t, ServerOptions{})
	line := strings.Repeat("x", MaxUDPPayload+10)
	var out bytes.Buffer
	if err := RunUDPClient(context.Background(), dialUDP(t, addr), strings.NewReader(line+"\n"), ClientOptions{Out: &out}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 || len(lines[1]) != len("Server says: ")+MaxUDPPayload || lines[2] != "Server says: ACK: "+strings.Repeat("x", 10) {
		t.Errorf("%d lines of output, of %v bytes", len(lines), func() (n []int) {
			for _, l := range lines {
				n = append(n, len(l))
			}
			return
		}())
	}
}

// silentUDP is a bound UDP socket that never answers.
func silentUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// Nobody answers: each message waits ReplyTimeout, says so, and the client
// goes on and reports the missing replies at the end.
func TestRunUDPClientNoReply(t *testing.T) {
	checkNoLeaks(t)
	addr := silentUDP(t)
	var out bytes.Buffer
	start := time.Now()
	err := RunUDPClient(context.Background(), dialUDP(t, addr), Messages([]string{"anyone?", "hello?"}),
		ClientOptions{Out: &out, ReplyTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrNoReply) || !strings.Contains(err.Error(), "2 of 2") {
		t.Errorf("RunUDPClient = %v, want ErrNoReply for 2 of 2", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("took %v, want about 2×100ms", d)
	}
	want := "Sending to " + addr + " over UDP\n" +
		`No reply to "anyone?" within 100ms (UDP does not retransmit)` + "\n" +
		`No reply to "hello?" within 100ms (UDP does not retransmit)` + "\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// Nobody listens on the port: the host says so (ICMP port unreachable), and
// the client reports it rather than waiting.
func TestRunUDPClientRefused(t *testing.T) {
	checkNoLeaks(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close() // now nobody listens there
	var out bytes.Buffer
	err = RunUDPClient(context.Background(), dialUDP(t, addr), Messages([]string{"one", "two", "three"}),
		ClientOptions{Out: &out, ReplyTimeout: 2 * time.Second})
	if !errors.Is(err, ErrNoReply) || !strings.Contains(err.Error(), "3 of 3") {
		t.Errorf("RunUDPClient = %v, want ErrNoReply for 3 of 3", err)
	}
	if n := strings.Count(out.String(), "No reply to "); n != 3 {
		t.Errorf("%d missing replies reported, want 3:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), `No reply to "one": `+addr+" answered port unreachable (nobody listens there)") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestRunUDPClientCancel(t *testing.T) {
	for _, tt := range []struct {
		name string
		msgs func() (io.Reader, func())
	}{
		{"waiting for a reply", func() (io.Reader, func()) { return Messages([]string{"x"}), func() {} }},
		{"waiting for input", func() (io.Reader, func()) {
			r, w := io.Pipe()
			return r, func() { w.Close() }
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeaks(t)
			addr := silentUDP(t)
			msgs, closeMsgs := tt.msgs()
			t.Cleanup(closeMsgs)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- RunUDPClient(ctx, dialUDP(t, addr), msgs, ClientOptions{ReplyTimeout: time.Minute})
			}()
			time.Sleep(50 * time.Millisecond)
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("RunUDPClient = %v, want context.Canceled", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("RunUDPClient did not return after cancel")
			}
		})
	}
}

func TestRunUDPClientMessagesError(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startUDPServer(t, ServerOptions{})
	broken := errors.New("stdin broke")
	msgs := io.MultiReader(strings.NewReader("ok\n"), errReader{broken})
	var out bytes.Buffer
	err := RunUDPClient(context.Background(), dialUDP(t, addr), msgs, ClientOptions{Out: &out})
	if !errors.Is(err, broken) || !strings.Contains(err.Error(), "read messages") {
		t.Errorf("RunUDPClient = %v, want the msgs error", err)
	}
	if !strings.Contains(out.String(), "Server says: ACK: ok\n") {
		t.Errorf("output:\n%s", out.String())
	}
}
