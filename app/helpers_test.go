package app

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// checkNoLeaks fails the test if goroutines started during it are still alive
// at cleanup (goleak retries for a while before it reports). Register it
// first, so that its cleanup runs last. Tests using it must not run in
// parallel.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	existing := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, existing) })
}

// logBuffer is an io.Writer for a slog handler, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the log's lines.
func (b *logBuffer) Lines() []string {
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}

// waitFor polls the log until it has a line containing all of parts.
func (b *logBuffer) waitFor(t *testing.T, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, l := range b.Lines() {
			if containsAll(l, parts...) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", parts, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// startServer serves on a fresh 127.0.0.1 listener. At cleanup it closes the
// server and checks that Serve returned nil.
func startServer(t *testing.T, opts ServerOptions) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	s := NewServer(opts)
	return s, serveListener(t, s, ln)
}

// serveListener serves s on ln. At cleanup it closes s and checks that Serve
// returned nil.
func serveListener(t *testing.T, s Service, ln net.Listener) string {
	t.Helper()
	serveInTest(t, func() error { return s.Serve(ln) }, s.Close)
	return ln.Addr().String()
}

// serveInTest runs serve on a goroutine of its own. At cleanup it calls
// close and checks that serve then returned nil, within 5 s.
func serveInTest(t *testing.T, serve, close func() error) {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- serve() }()
	t.Cleanup(func() {
		if err := close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
	})
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hung test fails, not hangs
	return c.(*net.TCPConn)
}

// localPort is the port of c's local address, as the server logs it.
func localPort(c net.Conn) string {
	_, port, _ := net.SplitHostPort(c.LocalAddr().String())
	return port
}

// wantReplies is the readable reference for the server's answer to input, with
// replies cut at chunk bytes: every "\n"-terminated line, minus one "\r" before
// its "\n", is answered in pieces of at most chunk bytes (an empty line with one
// empty reply); unterminated bytes at EOF are answered the same way, without
// CR stripping.
func wantReplies(input []byte, chunk int) []byte {
	var out bytes.Buffer
	ack := func(content []byte) {
		for {
			n := min(len(content), chunk)
			out.WriteString("ACK: ")
			out.Write(content[:n])
			out.WriteByte('\n')
			content = content[n:]
			if len(content) == 0 {
				return
			}
		}
	}
	for len(input) > 0 {
		i := bytes.IndexByte(input, '\n')
		if i < 0 {
			ack(input)
			break
		}
		ack(bytes.TrimSuffix(input[:i], []byte("\r")))
		input = input[i+1:]
	}
	return out.Bytes()
}

// readAllReplies reads until EOF and fails the test on any other error.
func readAllReplies(t *testing.T, c net.Conn) []byte {
	t.Helper()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading replies: %v (got %d bytes)", err, len(got))
	}
	return got
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestMain fails the package if any goroutine outlives the tests; the tests
// that use checkNoLeaks say which one left it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
