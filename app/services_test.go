package app

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// rfc864 is the readable reference for chargen: the first n bytes of RFC
// 864's pattern, built the way the RFC says. "There are 95 printing
// characters in the ASCII character set. Sort the characters into an ordered
// sequence and number the characters from 0 through 94. [...] On line N, put
// characters (0+N mod 95) through (71+N mod 95). End each line with carriage
// return and line feed."
func rfc864(n int) []byte {
	var printing []byte
	for c := byte(0); c < 128; c++ {
		if c >= 32 && c < 127 { // ASCII's printing characters, space included
			printing = append(printing, c)
		}
	}
	if len(printing) != 95 {
		panic("not 95 printing characters")
	}
	var b bytes.Buffer
	for line := 0; b.Len() < n; line++ {
		for i := 0; i <= 71; i++ {
			b.WriteByte(printing[(line+i)%95])
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()[:n]
}

// The first three lines, written out: line 0 starts with character 0, the
// space; the RFC's ring then goes on through '~'.
func TestRFC864Reference(t *testing.T) {
	want := " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n" +
		"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n" +
		"\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghi\r\n"
	if got := string(rfc864(3 * 74)); got != want {
		t.Fatalf("reference:\n%q\nwant:\n%q", got, want)
	}
	// Line 94 wraps around the ring; line 95 is line 0 again.
	lines := strings.SplitAfter(string(rfc864(96*74)), "\r\n")
	if want := "~ !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdef\r\n"; lines[94] != want {
		t.Errorf("line 94 = %q, want %q", lines[94], want)
	}
	if lines[95] != lines[0] {
		t.Errorf("line 95 = %q, want line 0 again", lines[95])
	}
	if p := chargenPattern(); !bytes.Equal(p, rfc864(len(p))) {
		t.Errorf("chargen's pattern buffer differs from the reference at byte %d", firstDiff(p, rfc864(len(p))))
	}
}

func TestChargenFirstLines(t *testing.T) {
	checkNoLeaks(t)
	s := NewChargenServer(ServerOptions{Logger: discardLogger(), MaxBytes: 3 * 74})
	c := dial(t, startService(t, kernelEnv, s))
	got := readAllReplies(t, c)
	want := " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n" +
		"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n" +
		"\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghi\r\n"
	if string(got) != want {
		t.Errorf("got:\n%q\nwant RFC 864's first lines:\n%q", got, want)
	}
}

// MaxBytes ends the stream cleanly, wherever it falls in a line.
func TestChargenMaxBytes(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s := NewChargenServer(ServerOptions{Logger: newLogger(&logs), MaxBytes: 1000})
	c := dial(t, startService(t, kernelEnv, s))
	if got, want := readAllReplies(t, c), rfc864(1000); !bytes.Equal(got, want) {
		t.Errorf("got %d bytes, want the first 1000 of the pattern (differ at %d)", len(got), firstDiff(got, want))
	}
	logs.waitFor(t, "service=chargen", "Sent the limit of 1000 bytes, closing: 127.0.0.1 "+localPort(c))
	c.Close()
	l := logs.waitFor(t, `msg="Client disconnected"`, "sent=1000")
	if strings.Contains(l, "err=") {
		t.Errorf("clean end logged with an error: %s", l)
	}
}

func TestChargen8MiB(t *testing.T) {
	checkNoLeaks(t)
	const size = 8 << 20
	s := NewChargenServer(ServerOptions{Logger: discardLogger(), MaxBytes: size})
	c := dial(t, startService(t, kernelEnv, s))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v; want %d and EOF", n, err, size)
	}
	want := sha256.Sum256(rfc864(size))
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Errorf("SHA-256 of the stream %s, want %s (RFC 864's pattern)", hex.EncodeToString(got), hex.EncodeToString(want[:]))
	}
}

// The usual end of chargen: the client has had enough and closes (or aborts).
// That is no error; and without a byte limit the stream just goes on.
func TestChargenClientCloses(t *testing.T) {
	for _, abort := range []bool{false, true} {
		t.Run(fmt.Sprintf("abort=%v", abort), func(t *testing.T) {
			checkNoLeaks(t)
			var logs logBuffer
			s := NewChargenServer(ServerOptions{Logger: newLogger(&logs), MaxBytes: -1})
			c := dial(t, startService(t, kernelEnv, s))
			if _, err := io.CopyN(io.Discard, c, 3<<20); err != nil {
				t.Fatal(err)
			}
			if abort {
				c.SetLinger(0)
			}
			c.Close()
			waitConns(t, s, 0)
			l := logs.waitFor(t, `msg="Client disconnected"`, "client=127.0.0.1:"+localPort(c))
			if strings.Contains(l, "err=") {
				t.Errorf("client leaving logged as an error: %s", l)
			}
		})
	}
}

// RFC 864: "any data received is thrown away".
func TestChargenThrowsAwayInput(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s := NewChargenServer(ServerOptions{Logger: newLogger(&logs), MaxBytes: 1 << 20})
	c := dial(t, startService(t, kernelEnv, s))
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(bytes.Repeat([]byte("ignored\n"), 32<<10)) // 256 KiB
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- err
	}()
	if got := readAllReplies(t, c); !bytes.Equal(got, rfc864(1<<20)) {
		t.Errorf("got %d bytes, want 1 MiB of the pattern", len(got))
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	logs.waitFor(t, `msg="Client disconnected"`, "received=262144", "sent=1048576")
}

// A chargen client that reads slowly but steadily is not taken for one that
// has stopped reading, however long it takes: the write deadline is renewed
// for every write.
func TestChargenSlowReader(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	const idle = 200 * time.Millisecond
	const n = 8 << 20
	want := sha256.Sum256(rfc864(n)) // before the transfer: the reference is slow under -race
	s := NewChargenServer(ServerOptions{Logger: newLogger(&logs), IdleTimeout: idle, MaxBytes: n})
	c := dialSmallBuf(t, serveListener(t, s, &smallBufListener{kernelEnv.listen(t)}))
	got, d := readSlowly(t, c, want)
	if got != n {
		t.Errorf("slow reader got %d bytes, want %d", got, n)
	}
	if d < 3*idle {
		t.Errorf("the transfer took only %v: it did not outlast the idle timeout", d)
	}
	if strings.Contains(logs.String(), "not reading") {
		t.Errorf("slow reader was taken for a stalled one:\n%s", logs.String())
	}
}

func TestEchoInteractive(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s := NewEchoServer(ServerOptions{Logger: newLogger(&logs)})
	c := dial(t, startService(t, kernelEnv, s))
	for _, msg := range []string{"hello\n", "x", "\r\n", strings.Repeat("long ", 1000)} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("got %.40q, %v; want %.40q", got, err, msg)
		}
	}
	c.CloseWrite()
	if rest := readAllReplies(t, c); len(rest) != 0 {
		t.Errorf("after half-close: %q", rest)
	}
	port := localPort(c)
	logs.waitFor(t, "service=echo", "client=127.0.0.1:"+port, `msg="Client connected: 127.0.0.1 `+port+`"`)
	l := logs.waitFor(t, "service=echo", `msg="Client disconnected"`, "received=5009", "sent=5009")
	if strings.Contains(l, "err=") {
		t.Errorf("clean close logged with an error: %s", l)
	}
}

// randomBytes returns n bytes that are the same on every run.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{8, 6, 2}).Read(b)
	return b
}

// writeInPieces writes data to c in writes of random sizes, then half-closes.
func writeInPieces(c *net.TCPConn, data []byte) error {
	rng := rand.New(rand.NewPCG(3, 4))
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(100<<10))
		if _, err := c.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return c.CloseWrite()
}

// Echo through 8 MiB, written while it is read back: what comes back is what
// went, and the server read exactly that.
func TestEcho8MiB(t *testing.T) {
	checkNoLeaks(t)
	data := randomBytes(8 << 20)
	want := sha256.Sum256(data)
	hl := &hashListener{Listener: kernelEnv.listen(t)}
	s := NewEchoServer(ServerOptions{Logger: discardLogger()})
	c := dial(t, serveListener(t, s, hl))
	sent := make(chan error, 1)
	go func() { sent <- writeInPieces(c, data) }()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("after %d bytes: %v", n, err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if got := h.Sum(nil); n != int64(len(data)) || !bytes.Equal(got, want[:]) {
		t.Errorf("echoed %d bytes with SHA-256 %x, want %d with %x", n, got, len(data), want)
	}
	waitConns(t, s, 0)
	if got, n := hl.sum(t); n != int64(len(data)) || !bytes.Equal(got, want[:]) {
		t.Errorf("server read %d bytes with SHA-256 %x, want %d with %x", n, got, len(data), want)
	}
}

// A client that sends but never reads what comes back cannot pin an echo
// connection: its writes time out after the idle timeout.
func TestEchoStuckReader(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s := NewEchoServer(ServerOptions{Logger: newLogger(&logs), IdleTimeout: 200 * time.Millisecond})
	c := dial(t, startService(t, kernelEnv, s))
	c.SetReadBuffer(4 << 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		chunk := make([]byte, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	logs.waitFor(t, "Client not reading for 200ms, closing: 127.0.0.1 "+localPort(c))
	waitConns(t, s, 0)
	c.Close()
	<-done
}

// Discard through 8 MiB: the server read exactly what was sent, and sent
// nothing.
func TestDiscard8MiB(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	data := randomBytes(8 << 20)
	want := sha256.Sum256(data)
	hl := &hashListener{Listener: kernelEnv.listen(t)}
	s := NewDiscardServer(ServerOptions{Logger: newLogger(&logs)})
	c := dial(t, serveListener(t, s, hl))
	if err := writeInPieces(c, data); err != nil {
		t.Fatal(err)
	}
	if got := readAllReplies(t, c); len(got) != 0 {
		t.Errorf("discard sent %d bytes", len(got))
	}
	waitConns(t, s, 0)
	if got, n := hl.sum(t); n != int64(len(data)) || !bytes.Equal(got, want[:]) {
		t.Errorf("server read %d bytes with SHA-256 %x, want %d with %x", n, got, len(data), want)
	}
	logs.waitFor(t, "service=discard", `msg="Client disconnected"`, "received=8388608", "sent=0")
}

// hashListener hashes everything the server reads from the one connection it
// accepts, to check that the server received exactly what was sent.
type hashListener struct {
	net.Listener
	mu   sync.Mutex
	conn *hashConn
}

func (l *hashListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	hc := &hashConn{Conn: c, h: sha256.New()}
	l.mu.Lock()
	l.conn = hc
	l.mu.Unlock()
	return hc, nil
}

// sum returns the SHA-256 of what the server read, and how many bytes.
func (l *hashListener) sum(t *testing.T) ([]byte, int64) {
	t.Helper()
	l.mu.Lock()
	hc := l.conn
	l.mu.Unlock()
	if hc == nil {
		t.Fatal("no connection accepted")
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.h.Sum(nil), hc.n
}

type hashConn struct {
	net.Conn
	mu sync.Mutex
	h  hash.Hash
	n  int64
}

func (c *hashConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.h.Write(p[:n])
	c.n += int64(n)
	c.mu.Unlock()
	return n, err
}
