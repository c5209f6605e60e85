package app

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestServerEcho(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startServer(t, ServerOptions{})

	tests := []struct {
		name, send, want string
	}{
		{"line", "hello\n", "ACK: hello\n"},
		{"crlf", "hello\r\n", "ACK: hello\n"},
		{"only one cr stripped", "a\r\r\n", "ACK: a\r\n"},
		{"empty line", "\n", "ACK: \n"},
		{"pipelined", "one\ntwo\r\nthree\n", "ACK: one\nACK: two\nACK: three\n"},
		{"unterminated at eof", "one\nlast", "ACK: one\nACK: last\n"},
		{"cr kept when unterminated", "last\r", "ACK: last\r\n"},
		{"nothing", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got := string(readAllReplies(t, c)); got != tt.want {
				t.Errorf("sent %q, got %q, want %q", tt.send, got, tt.want)
			}
		})
	}
}

// An interactive client gets each reply before it sends the next line: the
// server flushes when it has no more input, it does not wait for EOF.
func TestServerInteractive(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startServer(t, ServerOptions{})
	c := dial(t, addr)
	r := bufio.NewReader(c)
	for _, msg := range []string{"hello", "world", ""} {
		fmt.Fprintf(c, "%s\n", msg)
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := "ACK: " + msg + "\n"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// A half line is not answered until its newline (or EOF) arrives.
	io.WriteString(c, "par")
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if b, err := r.ReadByte(); err == nil {
		t.Fatalf("got %q before the line was complete", b)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "tial\n")
	if got, err := r.ReadString('\n'); err != nil || got != "ACK: partial\n" {
		t.Errorf("got %q, %v; want %q", got, err, "ACK: partial\n")
	}
}

func TestServerLongLine(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	_, addr := startServer(t, ServerOptions{Logger: newLogger(&logs)})

	line := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB
	c := dial(t, addr)
	go func() {
		c.Write(append(line, '\n'))
		c.CloseWrite()
	}()
	r := bufio.NewReaderSize(c, 2*MaxChunk)
	var sizes []int
	var payload []byte
	for {
		reply, err := r.ReadSlice('\n')
		if err == io.EOF && len(reply) == 0 {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p, ok := bytes.CutPrefix(reply, []byte("ACK: "))
		if !ok {
			t.Fatalf("reply without ACK prefix: %.40q", reply)
		}
		p = p[:len(p)-1]
		sizes = append(sizes, len(p))
		payload = append(payload, p...)
	}
	if want := []int{64 << 10, 64 << 10, 64 << 10, 8 << 10}; fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("reply sizes %v, want %v", sizes, want)
	}
	if !bytes.Equal(payload, line) {
		t.Errorf("payloads differ from the line at byte %d", firstDiff(payload, line))
	}

	// What is logged of a piece is cut short; the reply above was not.
	logs.waitFor(t, "Client disconnected")
	received := 0
	for _, l := range logs.Lines() {
		if strings.Contains(l, "Received: ") {
			received++
			if len(l) > 400 {
				t.Errorf("log line of %d bytes: %.100s…", len(l), l)
			}
		}
	}
	if received != 4 {
		t.Errorf("%d Received lines, want 4:\n%s", received, logs.String())
	}
	logs.waitFor(t, "Received: 0123456789abcdef", "… (65536 bytes)")
	logs.waitFor(t, "… (8192 bytes)")
}

// Lines around the piece boundary: no empty extra reply, and the "\r" of a CRLF
// never ends up in a piece.
func TestServerChunkBoundaries(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startServer(t, ServerOptions{})
	for _, n := range []int{MaxChunk - 1, MaxChunk, MaxChunk + 1, 2 * MaxChunk, 2*MaxChunk + 1} {
		for _, eol := range []string{"\n", "\r\n", ""} {
			t.Run(fmt.Sprintf("%d%q", n, eol), func(t *testing.T) {
				input := append(bytes.Repeat([]byte{'x'}, n), eol...)
				c := dial(t, addr)
				go func() {
					c.Write(input)
					c.CloseWrite()
				}()
				got := readAllReplies(t, c)
				if want := wantReplies(input, MaxChunk); !bytes.Equal(got, want) {
					t.Errorf("%d replies, want %d (differ at byte %d)",
						bytes.Count(got, []byte("\n")), bytes.Count(want, []byte("\n")), firstDiff(got, want))
				}
			})
		}
	}
}

// 4 MiB of random printable lines, some of them longer than MaxChunk, some
// CRLF-terminated, written while the replies are read.
func TestServerBulk(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startServer(t, ServerOptions{})

	rng := rand.New(rand.NewPCG(1, 2))
	var input []byte
	for len(input) < 4<<20 {
		n := rng.IntN(200)
		if rng.IntN(100) == 0 {
			n = MaxChunk - 2 + rng.IntN(MaxChunk+4)
		}
		for range n {
			input = append(input, byte(' '+rng.IntN('~'-' '+1)))
		}
		if rng.IntN(4) == 0 {
			input = append(input, '\r')
		}
		input = append(input, '\n')
	}
	input = append(input, "unterminated"...)
	want := wantReplies(input, MaxChunk)

	c := dial(t, addr)
	writeErr := make(chan error, 1)
	go func() {
		for rest := input; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(48<<10)) // odd-sized writes split lines anywhere
			if _, err := c.Write(rest[:n]); err != nil {
				writeErr <- err
				return
			}
			rest = rest[n:]
		}
		writeErr <- c.CloseWrite()
	}()
	got := readAllReplies(t, c)
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := firstDiff(got, want)
		t.Fatalf("got %d bytes, want %d; first difference at byte %d: got %.60q, want %.60q",
			len(got), len(want), i, got[i:], want[i:])
	}
}

func TestServerManyClients(t *testing.T) {
	checkNoLeaks(t)
	s, addr := startServer(t, ServerOptions{})
	const clients = 100
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			msg := fmt.Sprintf("client %d\nsecond line of %d\n", i, i)
			if _, err := io.WriteString(c, msg); err != nil {
				errs <- err
				return
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if want := fmt.Sprintf("ACK: client %d\nACK: second line of %d\n", i, i); err != nil || string(got) != want {
				errs <- fmt.Errorf("client %d: got %q, %v; want %q", i, got, err, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitConns(t, s, 0)
}

// waitConns waits until s has want connections open.
func waitConns(t *testing.T, s interface{ ActiveConns() int }, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.ActiveConns() != want {
		if time.Now().After(deadline) {
			t.Fatalf("ActiveConns = %d, want %d", s.ActiveConns(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ping sends one line and checks its reply, which proves c is being served.
func ping(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatal(err)
	}
	want := "ACK: " + msg + "\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
}

func TestServerMaxConns(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s, addr := startServer(t, ServerOptions{Logger: newLogger(&logs), MaxConns: 2})

	c1, c2 := dial(t, addr), dial(t, addr)
	ping(t, c1, "one")
	ping(t, c2, "two")

	c3 := dial(t, addr)
	c3.SetReadDeadline(time.Now().Add(2 * time.Second))
	start := time.Now()
	n, err := c3.Read(make([]byte, 1))
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("third client: Read = %d, %v; want it closed by the server", n, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("third client closed after %v", d)
	}
	logs.waitFor(t, "level=WARN", fmt.Sprintf(`msg="Refusing client 127.0.0.1 %s: connection limit 2 reached"`, localPort(c3)))
	if got := s.ActiveConns(); got != 2 {
		t.Errorf("ActiveConns = %d, want 2", got)
	}

	c1.Close()
	waitConns(t, s, 1)
	c4 := dial(t, addr)
	ping(t, c4, "four")
	ping(t, c2, "two again")
}

func TestServerIdleTimeout(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s, addr := startServer(t, ServerOptions{Logger: newLogger(&logs), IdleTimeout: 200 * time.Millisecond})

	c := dial(t, addr)
	port := localPort(c)
	start := time.Now()
	ping(t, c, "hello")
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Fatalf("idle client: Read = %d, %v; want EOF", n, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("idle client closed after %v, want about 200ms", d)
	}
	logs.waitFor(t, "Client disconnected")
	waitConns(t, s, 0)

	// The article's lines, in order, and nothing else at Info for this client.
	var msgs []string
	for _, l := range logs.Lines() {
		if !strings.Contains(l, "client=127.0.0.1:"+port) {
			t.Errorf("log line without client attribute: %s", l)
		}
		_, msg, _ := strings.Cut(l, "msg=")
		msgs = append(msgs, msg)
	}
	want := []string{
		`"Client connected: 127.0.0.1 ` + port + `" client=127.0.0.1:` + port,
		`"Received: hello" client=127.0.0.1:` + port,
		`"Client idle for 200ms, closing: 127.0.0.1 ` + port + `" client=127.0.0.1:` + port,
		`"Client disconnected" client=127.0.0.1:` + port,
	}
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Errorf("log:\n%s\nwant messages:\n%s", logs.String(), strings.Join(want, "\n"))
	}
}

// A client that sends but never reads cannot pin a connection forever: the
// idle timeout bounds the server's writes too.
func TestServerStuckReader(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s, addr := startServer(t, ServerOptions{Logger: newLogger(&logs), IdleTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	c.SetReadBuffer(4 << 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lines := bytes.Repeat([]byte("x\n"), 32<<10)
		for {
			if _, err := c.Write(lines); err != nil {
				return
			}
		}
	}()
	logs.waitFor(t, "Client disconnected", "err=")
	waitConns(t, s, 0)
	c.Close()
	<-done
}

func TestServerClientDisconnectLogged(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	_, addr := startServer(t, ServerOptions{Logger: newLogger(&logs)})
	c := dial(t, addr)
	port := localPort(c)
	ping(t, c, "hi")
	c.Close()
	l := logs.waitFor(t, `msg="Client disconnected"`, "client=127.0.0.1:"+port)
	if strings.Contains(l, "err=") {
		t.Errorf("clean close logged with an error: %s", l)
	}

	// A reset is an error and is logged as one.
	c = dial(t, addr)
	port = localPort(c)
	ping(t, c, "hi")
	c.SetLinger(0)
	c.Close()
	logs.waitFor(t, `msg="Client disconnected"`, "client=127.0.0.1:"+port, "err=")
}

func TestServerShutdownForcesIdleConn(t *testing.T) {
	checkNoLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(ServerOptions{Logger: discardLogger()})
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	c := dial(t, ln.Addr().String())
	ping(t, c, "hello")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("Shutdown took %v, want about 100ms", d)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return")
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("Read after Shutdown = %d, %v; want the connection closed", n, err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still accepting after Shutdown")
	}
	if n := s.ActiveConns(); n != 0 {
		t.Errorf("ActiveConns = %d after Shutdown", n)
	}
	// Twice is fine, and so is Serve after Shutdown.
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after Shutdown = %v", err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln2); err != nil {
		t.Errorf("Serve after Shutdown = %v", err)
	}
	if _, err := ln2.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Shutdown left its listener open: Accept = %v", err)
	}
}

// Shutdown waits for a connection that finishes on its own within ctx, and
// then returns nil; the listeners, v4 and v6 served by one Server, are closed at once.
func TestServerShutdownGraceful(t *testing.T) {
	checkNoLeaks(t)
	s := NewServer(ServerOptions{Logger: discardLogger()})
	var addrs []string
	served := make(chan error, 2)
	for _, a := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Logf("skipping %s: %v", a, err)
			continue
		}
		addrs = append(addrs, ln.Addr().String())
		go func() { served <- s.Serve(ln) }()
	}
	var conns []*net.TCPConn
	for _, a := range addrs {
		c := dial(t, a)
		ping(t, c, "hello "+a)
		conns = append(conns, c)
	}

	shutdown := make(chan error, 1)
	go func() { shutdown <- s.Shutdown(context.Background()) }()
	for _, a := range addrs { // listeners close first, connections stay up
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := net.Dial("tcp", a)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("%s still accepting during Shutdown", a)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, c := range conns {
		ping(t, c, "still here")
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with connections open", err)
	case <-time.After(50 * time.Millisecond):
	}
	for _, c := range conns {
		c.CloseWrite()
		if got := readAllReplies(t, c); len(got) != 0 {
			t.Errorf("unexpected %q", got)
		}
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the clients left")
	}
	for range addrs {
		if err := <-served; err != nil {
			t.Errorf("Serve = %v", err)
		}
	}
}

// Serve returns nil when its listener is closed from outside, and the accept
// error otherwise.
func TestServeListenerErrors(t *testing.T) {
	checkNoLeaks(t)
	s := NewServer(ServerOptions{Logger: discardLogger()})
	defer s.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	c := dial(t, ln.Addr().String())
	ping(t, c, "x") // Serve is running
	ln.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve after ln.Close = %v, want nil", err)
	}

	fatal := errors.New("listener broke")
	err = s.Serve(&fakeListener{errs: []error{fatal}})
	if !errors.Is(err, fatal) {
		t.Errorf("Serve = %v, want it to wrap %v", err, fatal)
	}
}

// Temporary accept errors (EMFILE) back off and retry; the server keeps serving.
func TestServeTemporaryAcceptError(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s := NewServer(ServerOptions{Logger: newLogger(&logs)})
	defer s.Close()

	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	ln := &fakeListener{Listener: inner, errs: []error{emfile, emfile, syscall.ENFILE}}
	served := make(chan error, 1)
	start := time.Now()
	go func() { served <- s.Serve(ln) }()
	c := dial(t, inner.Addr().String())
	ping(t, c, "served after EMFILE")
	if d := time.Since(start); d < 35*time.Millisecond { // 5 + 10 + 20ms of back-off
		t.Errorf("served after %v, want the accept loop to back off", d)
	}
	if n := strings.Count(logs.String(), "accept failed, retrying"); n != 3 {
		t.Errorf("%d retry warnings, want 3:\n%s", n, logs.String())
	}

	// Shutdown during a back-off ends it at once.
	ln2 := &fakeListener{errs: []error{emfile, emfile, emfile, emfile, emfile, emfile, emfile, emfile, emfile, emfile}}
	served2 := make(chan error, 1)
	go func() { served2 <- s.Serve(ln2) }()
	time.Sleep(100 * time.Millisecond) // well into the back-off
	start = time.Now()
	s.Close()
	for _, ch := range []chan error{served, served2} {
		if err := <-ch; err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Close took %v during an accept back-off", d)
	}
}

// fakeListener returns errs from Accept first, then delegates to Listener (or,
// without one, blocks until Close).
type fakeListener struct {
	net.Listener
	mu     sync.Mutex
	errs   []error
	closed chan struct{}
	once   sync.Once
}

func (l *fakeListener) init() { l.once.Do(func() { l.closed = make(chan struct{}) }) }

func (l *fakeListener) Accept() (net.Conn, error) {
	l.init()
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	if l.Listener != nil {
		return l.Listener.Accept()
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *fakeListener) Close() error {
	l.init()
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	if l.Listener != nil {
		return l.Listener.Close()
	}
	return nil
}

func (l *fakeListener) Addr() net.Addr {
	if l.Listener != nil {
		return l.Listener.Addr()
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
}

func TestLoggable(t *testing.T) {
	if got := loggable([]byte("short")); got != "short" {
		t.Errorf("loggable(short) = %q", got)
	}
	long := strings.Repeat("é", 150) // 300 bytes, 2 per rune
	got := loggable([]byte(long))
	if want := strings.Repeat("é", 100) + "… (300 bytes)"; got != want {
		t.Errorf("loggable = %q, want %q", got, want)
	}
	odd := "x" + long // the cut at 200 would split a rune
	got = loggable([]byte(odd))
	if want := "x" + strings.Repeat("é", 99) + "… (301 bytes)"; got != want {
		t.Errorf("loggable = %q, want %q", got, want)
	}
}

func TestHostPort(t *testing.T) {
	for _, tt := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(198, 18, 0, 1), Port: 43512}, "198.18.0.1 43512"},
		{&net.TCPAddr{IP: net.ParseIP("fd75:7374:6163:6b::1"), Port: 5000}, "fd75:7374:6163:6b::1 5000"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "/run/x.sock"},
		{pipeAddr{}, "pipe"},
	} {
		if got := article(hostPort(tt.addr)); got != tt.want {
			t.Errorf("%v: got %q, want %q", tt.addr, got, tt.want)
		}
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// TestSlowlorisIsCutOff: bytes of a line that never ends do not restart the
// idle timeout; the client is closed after it, like a silent one.
func TestSlowlorisIsCutOff(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	_, addr := startServer(t, ServerOptions{Logger: newLogger(&logs), IdleTimeout: 300 * time.Millisecond})
	start := time.Now()
	c := dial(t, addr)
	ping(t, c, "a whole line first")
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 100; i++ {
			if _, err := c.Write([]byte("x")); err != nil {
				done <- err
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		done <- nil
	}()
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("slowloris client: Read = %d, %v; want it closed", n, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a client trickling a byte every 50 ms was closed only after %v, with a 300 ms idle timeout", d)
	}
	c.Close()
	<-done
	logs.waitFor(t, "Client idle for 300ms, closing")
}
