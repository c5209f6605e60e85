package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRunClient(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startServer(t, ServerOptions{})
	conn := dial(t, addr)
	var out bytes.Buffer
	if err := RunClient(context.Background(), conn, Messages([]string{"a", "b"}), ClientOptions{Out: &out}); err != nil {
		t.Fatalf("RunClient: %v", err)
	}
	want := "Connected to server\nServer says: ACK: a\nServer says: ACK: b\nDisconnected from server\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
	if _, err := conn.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("conn not closed after RunClient: Write = %v", err)
	}
}

func TestMessages(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"hello"}, "hello\n"},
		{[]string{"a", "", "b c"}, "a\n\nb c\n"},
	} {
		got, _ := io.ReadAll(Messages(tt.args))
		if string(got) != tt.want {
			t.Errorf("Messages(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

// notifyWriter collects output and tells waiters when it grows.
type notifyWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newNotifyWriter() *notifyWriter { return &notifyWriter{changed: make(chan struct{}, 1)} }

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
	return w.buf.Write(p)
}

func (w *notifyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *notifyWriter) waitFor(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for !strings.Contains(w.String(), s) {
		select {
		case <-w.changed:
		case <-timeout:
			t.Fatalf("output has no %q:\n%s", s, w.String())
		}
	}
}

// Typed lines go out one by one, and each reply is printed before the next
// line is typed: nothing waits for the end of the input.
func TestRunClientInteractive(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startServer(t, ServerOptions{})
	stdin, typing := io.Pipe()
	out := newNotifyWriter()
	done := make(chan error, 1)
	go func() { done <- RunClient(context.Background(), dial(t, addr), stdin, ClientOptions{Out: out}) }()

	io.WriteString(typing, "first\n")
	out.waitFor(t, "Server says: ACK: first\n")
	io.WriteString(typing, "second")
	io.WriteString(typing, " line\n")
	out.waitFor(t, "Server says: ACK: second line\n")
	io.WriteString(typing, "no newline at the end")
	typing.Close()
	if err := <-done; err != nil {
		t.Fatalf("RunClient: %v", err)
	}
	want := "Connected to server\nServer says: ACK: first\nServer says: ACK: second line\n" +
		"Server says: ACK: no newline at the end\nDisconnected from server\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// silentServer accepts connections and reads them, but never answers or
// closes until the test ends.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestRunClientReplyTimeout(t *testing.T) {
	checkNoLeaks(t)
	addr := silentServer(t)
	var out bytes.Buffer
	start := time.Now()
	err := RunClient(context.Background(), dial(t, addr), Messages([]string{"anyone?"}),
		ClientOptions{Out: &out, ReplyTimeout: 200 * time.Millisecond})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("RunClient = %v, want a reply timeout", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("RunClient returned after %v, want about 200ms", d)
	}
	if want := "Connected to server\nDisconnected from server\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

func TestRunClientCancel(t *testing.T) {
	for _, tt := range []struct {
		name string
		msgs func() (io.Reader, func())
	}{
		{"waiting for replies", func() (io.Reader, func()) { return Messages([]string{"x"}), func() {} }},
		{"waiting for input", func() (io.Reader, func()) {
			r, w := io.Pipe()
			return r, func() { w.Close() } // the stuck stdin Read ends when the test closes it
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeaks(t)
			addr := silentServer(t)
			msgs, closeMsgs := tt.msgs()
			t.Cleanup(closeMsgs)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- RunClient(ctx, dial(t, addr), msgs, ClientOptions{ReplyTimeout: time.Minute})
			}()
			time.Sleep(50 * time.Millisecond)
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("RunClient = %v, want context.Canceled", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("RunClient did not return after cancel")
			}
		})
	}
}

// The server closing while there is still input to send is an error; so is a reset.
func TestRunClientServerGone(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		checkNoLeaks(t)
		_, addr := startServer(t, ServerOptions{IdleTimeout: 100 * time.Millisecond})
		stdin, typing := io.Pipe()
		t.Cleanup(func() { typing.Close() })
		out := newNotifyWriter()
		go io.WriteString(typing, "hello\n")
		err := RunClient(context.Background(), dial(t, addr), stdin, ClientOptions{Out: out})
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("RunClient = %v, want ErrServerClosed", err)
		}
		want := "Connected to server\nServer says: ACK: hello\nDisconnected from server\n"
		if out.String() != want {
			t.Errorf("output %q, want %q", out.String(), want)
		}
	})
	t.Run("reset", func(t *testing.T) {
		checkNoLeaks(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 1))
			c.(*net.TCPConn).SetLinger(0) // close with RST
			c.Close()
		}()
		stdin, typing := io.Pipe()
		t.Cleanup(func() { typing.Close() })
		go io.WriteString(typing, "hello\n")
		err = RunClient(context.Background(), dial(t, ln.Addr().String()), stdin, ClientOptions{})
		if err == nil || errors.Is(err, ErrServerClosed) || isTimeout(err) {
			t.Errorf("RunClient = %v, want a connection error", err)
		}
	})
}

// A failing msgs reader is reported as such.
func TestRunClientMessagesError(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startServer(t, ServerOptions{})
	broken := errors.New("stdin broke")
	msgs := io.MultiReader(strings.NewReader("ok\n"), errReader{broken})
	err := RunClient(context.Background(), dial(t, addr), msgs, ClientOptions{})
	if !errors.Is(err, broken) || !strings.Contains(err.Error(), "read messages") {
		t.Errorf("RunClient = %v, want the msgs error", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
