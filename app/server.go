package app

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// DefaultIdleTimeout is how long a connection may stay silent before the
	// server closes it, when ServerOptions.IdleTimeout is 0.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMaxConns is the connection limit when ServerOptions.MaxConns is 0.
	DefaultMaxConns = 4096
	// MaxChunk is the longest reply payload: a line longer than this is
	// answered in pieces of this size, each as its own "ACK: <piece>\n".
	MaxChunk = 64 << 10
)

const (
	// maxLoggedLine bounds what a "Received:" log line quotes of a message;
	// the reply itself is never truncated.
	maxLoggedLine = 200
	// replyBufSize is the bufio.Writer size for replies. Larger replies (long
	// pieces) bypass the buffer and go straight to the connection.
	replyBufSize = 16 << 10
	// Accept back-off after a temporary error (EMFILE and friends): starts at
	// minAcceptBackoff, doubles, capped at maxAcceptBackoff.
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// ServerOptions configure a Server. The zero value is usable.
type ServerOptions struct {
	Logger      *slog.Logger  // nil: slog.Default()
	IdleTimeout time.Duration // 0: DefaultIdleTimeout; negative: none
	MaxConns    int           // 0: DefaultMaxConns
}

// Server is the article's ACK server. One Server may serve several listeners at
// once (say an IPv4 and an IPv6 one); it runs one goroutine per connection and
// none per line.
type Server struct {
	log      *slog.Logger
	idle     time.Duration // <= 0: no idle timeout
	maxConns int
	chunk    int // MaxChunk; tests make it smaller to exercise the splitting

	mu        sync.Mutex
	shutdown  bool                          // set once by Shutdown; no Serve or connection starts after
	done      chan struct{}                 // closed when shutdown is set: wakes accept back-offs
	listeners map[*trackedListener]struct{} // listeners being served, closed by Shutdown
	conns     map[*serverConn]struct{}      // open connections
	wg        sync.WaitGroup                // Serve loops and connection goroutines
}

type trackedListener struct{ net.Listener }

// serverConn is one accepted connection; forced is set when Shutdown closes it,
// so that its goroutine does not report the resulting error as the client's.
type serverConn struct {
	net.Conn
	forced atomic.Bool
}

// NewServer returns a Server with opts applied.
func NewServer(opts ServerOptions) *Server {
	s := &Server{
		log:       opts.Logger,
		idle:      opts.IdleTimeout,
		maxConns:  opts.MaxConns,
		chunk:     MaxChunk,
		done:      make(chan struct{}),
		listeners: make(map[*trackedListener]struct{}),
		conns:     make(map[*serverConn]struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.idle == 0 {
		s.idle = DefaultIdleTimeout
	}
	if s.maxConns <= 0 {
		s.maxConns = DefaultMaxConns
	}
	return s
}

// Serve accepts connections on ln and serves each on its own goroutine, until
// Shutdown or Close is called or ln is closed; in those cases it returns nil. It
// returns any other accept error that is not temporary. Temporary accept errors
// (EMFILE, ENFILE, anything whose Temporary method says so) are retried after a
// short back-off (5ms doubling to 1s), because a server that stops accepting
// when it briefly runs out of file descriptors is worse than one that waits.
//
// Serve may be called for several listeners at once. Called after Shutdown, it
// closes ln and returns nil.
func (s *Server) Serve(ln net.Listener) error {
	tl := &trackedListener{ln}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[tl] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, tl)
		s.mu.Unlock()
		s.wg.Done()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.shuttingDown() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !isTemporary(err) {
				return fmt.Errorf("app: accept on %v: %w", ln.Addr(), err)
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			s.log.Warn("accept failed, retrying", "addr", ln.Addr().String(), "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		s.start(c)
	}
}

func isTemporary(err error) bool {
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// start hands c to its own goroutine, or closes it at once if the server is
// shutting down or at its connection limit. It never blocks, so the accept loop
// keeps draining the backlog even when the limit is reached.
func (s *Server) start(c net.Conn) {
	sc := &serverConn{Conn: c}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		c.Close()
		return
	}
	if len(s.conns) >= s.maxConns {
		s.mu.Unlock()
		c.Close()
		ip, port := hostPort(c.RemoteAddr())
		s.log.Warn(fmt.Sprintf("Refusing client %s: connection limit %d reached", article(ip, port), s.maxConns),
			"client", c.RemoteAddr().String())
		return
	}
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		s.serveConn(sc)
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
	}()
}

// Shutdown stops the server in order: it closes the listeners (so Serve
// returns nil), waits for open connections to end on their own until ctx is
// done, then closes the connections still open and waits for their goroutines.
// It returns ctx.Err() if it had to close connections, joined with any
// listener Close error other than net.ErrClosed. It is safe to call more than
// once, also concurrently; every call returns only when all of the server's
// goroutines are gone.
func (s *Server) Shutdown(ctx context.Context) error {
	forced, err := s.shutdownAndWait(ctx)
	if forced {
		return errors.Join(err, ctx.Err())
	}
	return err
}

// Close closes the listeners and all connections at once, and waits for the
// server's goroutines: Shutdown with an already cancelled context. Unlike
// Shutdown it does not report context.Canceled for the connections it closed,
// since closing them is what it was asked to do.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.shutdownAndWait(ctx)
	return err
}

// shutdownAndWait does Shutdown's work. forced reports whether ctx ran out with
// connections still open (they are closed then); err holds listener Close errors.
func (s *Server) shutdownAndWait(ctx context.Context) (forced bool, err error) {
	s.mu.Lock()
	if !s.shutdown {
		s.shutdown = true
		close(s.done)
	}
	lns := make([]*trackedListener, 0, len(s.listeners))
	for tl := range s.listeners {
		lns = append(lns, tl)
	}
	s.mu.Unlock()

	var errs []error
	for _, tl := range lns {
		if err := tl.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("app: close listener %v: %w", tl.Addr(), err))
		}
	}

	// No wg.Add can happen from here on: both Serve and start check s.shutdown
	// under s.mu before adding, so Wait cannot race with an Add from zero.
	allDone := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(allDone)
	}()
	select {
	case <-allDone: // checked first: an expired ctx with nothing open is no force
		return false, errors.Join(errs...)
	default:
	}
	select {
	case <-allDone:
		return false, errors.Join(errs...)
	case <-ctx.Done():
	}

	s.mu.Lock()
	for sc := range s.conns {
		forced = true
		sc.forced.Store(true)
		sc.Close()
	}
	s.mu.Unlock()
	<-allDone
	return forced, errors.Join(errs...)
}

// ActiveConns reports how many connections are open.
func (s *Server) ActiveConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// serveConn runs the article's conversation on one connection.
//
// Framing: input is read through a bufio.Reader of chunk+2 bytes, room for the
// longest piece plus a CRLF, and never more is held. Buffered bytes are
// examined in place (Peek) and dropped once answered (Discard), so a line is
// never accumulated. A line's content is what precedes its "\n", minus one
// "\r" right before the "\n". Content of up to chunk bytes is one reply; longer
// content is answered in chunk-sized pieces and a final shorter one (never an
// empty one). A piece is cut only when chunk+2 bytes without a newline are
// buffered: then the content is at least chunk+1 bytes long whether or not a
// CRLF follows, so the piece cannot contain the "\r" of a CRLF. Bytes left
// unterminated at EOF are answered the same way, without CR stripping.
//
// Replies go into a bufio.Writer that is flushed whenever the buffered input
// holds no complete line, right before the read that may block: a pipelining client gets its
// replies in few writes, an interactive one gets each reply at once.
func (s *Server) serveConn(c *serverConn) {
	remote := c.RemoteAddr()
	ip, port := hostPort(remote)
	log := s.log.With("client", remote.String())
	log.Info("Client connected: " + article(ip, port))

	r := bufio.NewReaderSize(c, s.chunk+2)
	w := bufio.NewWriterSize(c, replyBufSize)
	reply := func(p []byte) error {
		if log.Enabled(context.Background(), slog.LevelInfo) {
			log.Info("Received: " + loggable(p))
		}
		w.WriteString("ACK: ")
		w.Write(p)
		return w.WriteByte('\n') // bufio.Writer keeps the first error; WriteByte returns it
	}

	var err error
	idle := false
	// scanned counts the buffered bytes already known to hold no '\n', so a
	// line trickling in a byte per read is not rescanned from its start each
	// time (that would be quadratic in the line length).
	scanned := 0
	consume := func(n int) {
		r.Discard(n)
		scanned = max(0, scanned-n)
	}
	for err == nil {
		b, _ := r.Peek(r.Buffered())
		if i := bytes.IndexByte(b[scanned:], '\n'); i >= 0 {
			i += scanned
			line := b[:i]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) > s.chunk {
				err = reply(line[:s.chunk])
				consume(s.chunk)
			} else {
				err = reply(line)
				consume(i + 1)
			}
			continue
		}
		scanned = len(b)
		if len(b) >= s.chunk+2 {
			err = reply(b[:s.chunk])
			consume(s.chunk)
			continue
		}
		// Not a whole line buffered: answer what we have so far, then wait.
		if err = w.Flush(); err != nil {
			break
		}
		if s.idle > 0 {
			c.SetReadDeadline(time.Now().Add(s.idle))
		}
		_, err = r.Peek(len(b) + 1) // blocks until at least one more byte, or an error
		if err == nil {
			if s.idle > 0 {
				// A client that sends but never reads must not pin us forever.
				c.SetWriteDeadline(time.Now().Add(s.idle))
			}
			continue
		}
		if isTimeout(err) {
			idle = true
			break
		}
		if err == io.EOF {
			// The client half-closed: answer what is left, then close our side.
			rest, _ := r.Peek(r.Buffered())
			for len(rest) > 0 && err == io.EOF {
				n := min(len(rest), s.chunk)
				if e := reply(rest[:n]); e != nil {
					err = e
				}
				rest = rest[n:]
			}
			if err == io.EOF {
				if e := w.Flush(); e != nil {
					err = e
				}
			}
		}
	}

	if idle {
		log.Info(fmt.Sprintf("Client idle for %v, closing: %s", s.idle, article(ip, port)))
	}
	c.Close()
	if idle || err == io.EOF || c.forced.Load() || errors.Is(err, net.ErrClosed) {
		log.Info("Client disconnected")
	} else {
		log.Info("Client disconnected", "err", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hostPort splits an address into the article's "<ip> <port>" parts. An address
// that is not host:port (a unix socket, net.Pipe) comes back whole, port empty.
func hostPort(a net.Addr) (ip, port string) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.String(), strconv.Itoa(a.Port)
	case nil:
		return "<nil>", ""
	}
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), ""
	}
	return host, port
}

// article formats a client the article's way, "<ip> <port>", or just the
// address when it has no port.
func article(ip, port string) string {
	if port == "" {
		return ip
	}
	return ip + " " + port
}

// loggable quotes at most maxLoggedLine bytes of a message, cut at a rune
// boundary, and says how long the whole message was.
func loggable(p []byte) string {
	if len(p) <= maxLoggedLine {
		return string(p)
	}
	n := maxLoggedLine
	for n > maxLoggedLine-4 && n > 0 && p[n]&0xC0 == 0x80 { // don't split a UTF-8 sequence
		n--
	}
	return fmt.Sprintf("%s… (%d bytes)", p[:n], len(p))
}
