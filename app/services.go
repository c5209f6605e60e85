package app

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The classic small services of the Internet's early RFCs, kept by inetd on
// every Unix host for decades because they make a transport's behaviour
// visible: echo shows a round trip, discard a one-way flow into a reader that
// always keeps up, chargen a one-way flow out of a writer that always has
// more. All three run on the same connection machinery as the ACK server, so
// they have its connection limit, idle timeout and graceful shutdown.

const (
	// echoBufSize is the largest the one buffer an echo connection reads
	// into and writes from grows to: at most this much received data is held
	// before it is sent back.
	echoBufSize = 64 << 10
	// discardBufSize is the largest a discard connection's buffer grows to.
	discardBufSize = 32 << 10
	// firstBufSize is what those buffers start at. An idle connection then
	// holds 1 KiB, not 64: a read that fills the buffer doubles it, so a
	// bulk transfer reaches the full size within a few reads.
	firstBufSize = 1 << 10
	// chargenWriteSize is the most chargen hands to one Write.
	chargenWriteSize = 64 << 10
	// chargenLinger bounds how long chargen, having ended a stream itself
	// (limit, Shutdown), waits for the client to close its side; the idle
	// timeout lowers it.
	chargenLinger = 2 * time.Second
)

// EchoServer is the Echo Protocol of RFC 862 on TCP: it sends back every byte
// it receives, until the client closes (after a half-close it closes too,
// having sent everything back). Data passes through one buffer per connection,
// 1 KiB growing to 64 KiB while reads fill it: the server reads at most that
// much before writing it back, so a
// client that sends without reading is slowed by TCP flow control, not
// buffered. Limits: ServerOptions.MaxConns connections; a client that sends
// nothing for IdleTimeout is closed, and so is one that does not read what
// comes back for IdleTimeout. Log lines carry service=echo.
type EchoServer struct{ core }

// NewEchoServer returns an EchoServer with opts applied (MaxBytes is unused).
func NewEchoServer(opts ServerOptions) *EchoServer {
	s := &EchoServer{}
	s.init(opts, "echo", s.echo)
	return s
}

// growingBuf is a read buffer that starts small and doubles, up to max,
// whenever a read fills it.
type growingBuf struct {
	b   []byte
	max int
}

func newGrowingBuf(max int) *growingBuf {
	return &growingBuf{b: make([]byte, min(firstBufSize, max)), max: max}
}

// filled is called with what a read returned: a full buffer grows.
func (g *growingBuf) filled(n int) {
	if n == len(g.b) && len(g.b) < g.max {
		g.b = make([]byte, min(2*len(g.b), g.max))
	}
}

func (s *EchoServer) echo(c *serverConn, _ *slog.Logger) error {
	g := newGrowingBuf(echoBufSize)
	for {
		buf := g.b
		if s.idle > 0 {
			c.SetReadDeadline(time.Now().Add(s.idle))
		}
		n, err := c.Read(buf)
		c.received += int64(n)
		if n > 0 {
			if s.idle > 0 {
				c.SetWriteDeadline(time.Now().Add(s.idle))
			}
			w, werr := c.Write(buf[:n])
			c.sent += int64(w)
			if werr != nil {
				return writeEnd(werr, false)
			}
			g.filled(n)
		}
		if err != nil {
			if isTimeout(err) {
				return errIdle
			}
			return err // io.EOF: the client is done, and has everything back
		}
	}
}

// DiscardServer is the Discard Protocol of RFC 863 on TCP: it reads and
// throws away everything it receives, and sends nothing. Limits:
// ServerOptions.MaxConns connections; a client that sends nothing for
// IdleTimeout is closed; 32 KiB of buffer per connection. Log lines carry
// service=discard, and the disconnect line says how much was received and
// its SHA-256.
type DiscardServer struct{ core }

// NewDiscardServer returns a DiscardServer with opts applied (MaxBytes is
// unused).
func NewDiscardServer(opts ServerOptions) *DiscardServer {
	s := &DiscardServer{}
	s.init(opts, "discard", s.discard)
	return s
}

func (s *DiscardServer) discard(c *serverConn, _ *slog.Logger) error {
	g := newGrowingBuf(discardBufSize)
	// The disconnect line carries the SHA-256 of what arrived, so a lab can
	// check that TCP delivered every byte, in order, through a lossy link.
	h := sha256.New()
	defer func() { c.digest = hex.EncodeToString(h.Sum(nil)) }()
	for {
		if s.idle > 0 {
			c.SetReadDeadline(time.Now().Add(s.idle))
		}
		n, err := c.Read(g.b)
		c.received += int64(n)
		h.Write(g.b[:n])
		g.filled(n)
		if err != nil {
			if isTimeout(err) {
				return errIdle
			}
			return err
		}
	}
}

// ChargenServer is the Character Generator Protocol of RFC 864 on TCP: it
// sends the classic pattern of 72-character lines of printable ASCII, each
// starting one character further along than the one before, until the client
// closes the connection, and throws away whatever the client sends.
//
// Limits: ServerOptions.MaxConns connections; at most MaxBytes bytes per
// connection (default 1 GiB), after which the server closes the connection
// cleanly, so a reader that never stops is still bounded; each write has the
// idle timeout as its deadline, so a client that stops reading is dropped
// after IdleTimeout. A client that sends nothing but reads is not idle: that
// is how chargen is used. Each connection has two goroutines, one writing,
// one reading and discarding (RFC 864: "any data received is thrown away"),
// and a write buffer shared by all connections (the pattern is read-only).
// Shutdown ends the streams at once, cleanly (a write blocked on a client's
// full window is cut short), rather than waiting for clients that may read
// forever. Log lines carry service=chargen.
type ChargenServer struct {
	core
	maxBytes int64 // < 0: no limit
}

// NewChargenServer returns a ChargenServer with opts applied.
func NewChargenServer(opts ServerOptions) *ChargenServer {
	s := &ChargenServer{maxBytes: opts.MaxBytes}
	if s.maxBytes == 0 {
		s.maxBytes = DefaultMaxBytes
	}
	s.init(opts, "chargen", s.chargen)
	// Shutdown ends streams rather than waiting for clients that may read
	// forever: a writer blocked on a client's full window is woken by a
	// deadline in the past, and then sees done.
	s.interrupt = func(c *serverConn) { c.SetWriteDeadline(time.Now()) }
	return s
}

func (s *ChargenServer) chargen(c *serverConn, log *slog.Logger) error {
	// The reader throws away what the client sends, and notices when the
	// client has closed its side, which is how chargen is meant to end.
	var clientDone atomic.Bool
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		n, err := io.Copy(io.Discard, c)
		c.received = n // read by this goroutine's waiter only, after readerDone
		if err == nil {
			clientDone.Store(true)
		}
	}()
	defer func() {
		c.Close() // ends the reader's Read
		<-readerDone
	}()

	err := s.stream(c, &clientDone)
	if err == nil {
		ip, port := hostPort(c.RemoteAddr())
		log.Info(fmt.Sprintf("Sent the limit of %d bytes, closing: %s", s.maxBytes, article(ip, port)))
	}
	if err == nil || errors.Is(err, errShuttingDown) {
		// We end the connection while the client may still be sending.
		// Closing with unread data would make TCP reset the connection, and
		// a reset can destroy the end of the stream before the client has
		// read it; so send our FIN after the data, and keep discarding until
		// the client closes too, for a bounded time.
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			linger := chargenLinger
			if s.idle > 0 {
				linger = min(linger, s.idle)
			}
			c.SetReadDeadline(time.Now().Add(linger))
			<-readerDone
		}
	}
	return err
}

// stream sends the pattern until the limit (nil), Shutdown
// (errShuttingDown) or a write fails (see writeEnd).
func (s *ChargenServer) stream(c *serverConn, clientDone *atomic.Bool) error {
	pattern := chargenPattern()
	shuttingDown := func() bool {
		select {
		case <-s.done:
			return true
		default:
			return false
		}
	}
	for s.maxBytes < 0 || c.sent < s.maxBytes {
		if s.idle > 0 {
			c.SetWriteDeadline(time.Now().Add(s.idle))
		}
		// Checked after the deadline is set: Shutdown closes done before it
		// sets its past deadline (interrupt), so either this sees done, or
		// the deadline that the Write below gets is Shutdown's.
		if shuttingDown() {
			return errShuttingDown
		}
		off := int(c.sent % chargenPeriod)
		n := int64(chargenWriteSize)
		if s.maxBytes >= 0 {
			n = min(n, s.maxBytes-c.sent)
		}
		w, err := c.Write(pattern[off : off+int(n)])
		c.sent += int64(w)
		if err != nil {
			if shuttingDown() {
				return errShuttingDown
			}
			return writeEnd(err, clientDone.Load())
		}
	}
	return nil
}

// writeEnd says why a write failed: errStalled for the idle timeout, nil for
// a client that has closed the connection (a reset or broken pipe after the
// client closed is how a stream to it ends), or the error.
func writeEnd(err error, clientClosed bool) error {
	switch {
	case isTimeout(err):
		return errStalled
	case clientClosed, errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		return nil
	}
	return err
}

// RFC 864's pattern: "There are 95 printing characters in the ASCII character
// set. Sort the characters into an ordered sequence and number the characters
// from 0 through 94. Think of the sequence as a ring so that character number
// 0 follows character number 94. On the first line (line 0) put the characters
// numbered 0 through 71. [...] On line N, put characters (0+N mod 95) through
// (71+N mod 95). End each line with carriage return and line feed."
//
// The printing characters are ' ' (32) through '~' (126), in ASCII order, so
// line 0 starts with a space, as BSD inetd's chargen does. After 95 lines the
// pattern repeats: it has a period of 95*74 = 7030 bytes.
const (
	chargenFirst   = ' '
	chargenRing    = '~' - ' ' + 1 // 95 printing characters
	chargenLineLen = 72
	chargenPeriod  = chargenRing * (chargenLineLen + 2)
)

// chargenLine returns line n of RFC 864's pattern (counting from 0), with its
// CRLF. Chargen and HTTP's /bytes send these lines one after another.
func chargenLine(n int) string {
	b := make([]byte, 0, chargenLineLen+2)
	for i := range chargenLineLen {
		b = append(b, byte(chargenFirst+(n+i)%chargenRing))
	}
	return string(append(b, '\r', '\n'))
}

// chargenPattern is the pattern from its start, one period plus
// chargenWriteSize long, so that the chargenWriteSize bytes starting at any
// offset within the first period are contiguous in it: a stream at position
// p sends chargenPattern()[p%chargenPeriod:][:n]. It is built once and only
// read after.
var chargenPattern = sync.OnceValue(func() []byte {
	b := make([]byte, 0, chargenPeriod+chargenWriteSize+chargenLineLen+2)
	for n := 0; len(b) < chargenPeriod+chargenWriteSize; n++ {
		b = append(b, chargenLine(n)...)
	}
	return b
})
