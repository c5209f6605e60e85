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
	// DefaultMaxBytes is ServerOptions.MaxBytes when it is 0: the most bytes
	// chargen sends on one connection, and the largest n of HTTP's /bytes?n=.
	DefaultMaxBytes = 1 << 30
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

// ServerOptions configure a Server, and every other service of this package.
// The zero value is usable.
type ServerOptions struct {
	Logger      *slog.Logger  // nil: slog.Default()
	IdleTimeout time.Duration // 0: DefaultIdleTimeout; negative: none. The ACK server counts it from the end of the last line, so a line trickled in a byte at a time (slowloris) is cut off too
	MaxConns    int           // 0: DefaultMaxConns
	// MaxBytes bounds what a service generates rather than echoes: chargen
	// closes a connection after sending this many bytes, and HTTP's /bytes
	// refuses a larger n. 0: DefaultMaxBytes; negative: no limit. The ACK,
	// echo and discard servers ignore it.
	MaxBytes int64
}

// Service is a TCP service of this package: the ACK server, echo, discard,
// chargen and HTTP all have this method set, and all of them apply
// ServerOptions' connection limit, idle timeout and graceful shutdown the
// same way, because they share one implementation of it.
type Service interface {
	// Serve accepts connections on ln and serves each on its own goroutine,
	// until Shutdown or Close is called or ln is closed; then it returns nil.
	// Temporary accept errors (EMFILE, ENFILE) are retried after a back-off
	// of 5ms doubling to 1s; any other accept error is returned. Serve may be
	// called for several listeners at once; called after Shutdown, it closes
	// ln and returns nil.
	Serve(ln net.Listener) error
	// Shutdown closes the listeners (so Serve returns nil), waits for the open
	// connections to end on their own until ctx is done, then closes those
	// still open. It returns when all of the service's goroutines are gone,
	// with ctx.Err() if it had to close connections. It is safe to call more
	// than once, also concurrently.
	Shutdown(ctx context.Context) error
	// Close is Shutdown with no grace: it closes the listeners and every
	// connection at once and waits for the goroutines. It does not report
	// the connections it closed as an error.
	Close() error
	// ActiveConns reports how many connections are open.
	ActiveConns() int
}

var (
	_ Service = (*Server)(nil)
	_ Service = (*EchoServer)(nil)
	_ Service = (*DiscardServer)(nil)
	_ Service = (*ChargenServer)(nil)
	_ Service = (*HTTPServer)(nil)
)

// Why a connection handler ended, besides the client leaving (nil or io.EOF)
// or a network error. serveConn turns each into its own log line.
var (
	errIdle         = errors.New("client idle")            // a read hit the idle timeout
	errStalled      = errors.New("client not reading")     // a write hit the idle timeout
	errShuttingDown = errors.New("server shutting down")   // the handler ended its stream for Shutdown
	errAcceptStop   = fmt.Errorf("app: %w", net.ErrClosed) // accept: the listener is closed or the service is shutting down
)

// connHandler serves one admitted connection and returns why it ended (see
// errIdle and friends). It need not close c. log names the client.
type connHandler func(c *serverConn, log *slog.Logger) error

// core is the connection machinery every TCP service shares: the accept loop
// with its back-off, the connection limit and its log line, the idle timeout
// setting, the connection log lines, and graceful shutdown. A service embeds
// it and supplies a connHandler; HTTP, whose connections net/http serves,
// uses accept and admit through a listener wrapper instead of Serve.
type core struct {
	log      *slog.Logger
	service  string        // "" for the ACK server, whose log lines carry no service attribute
	idle     time.Duration // <= 0: no idle timeout
	maxConns int
	handle   connHandler
	// interrupt, if not nil, is called by Shutdown for every open
	// connection, after done is closed, to wake a handler that is blocked
	// where it cannot watch done (chargen's Write). It must not block.
	interrupt func(*serverConn)

	mu        sync.Mutex
	closing   bool                          // set once by Shutdown; no Serve or connection starts after
	done      chan struct{}                 // closed when closing is set: wakes accept back-offs, ends streams
	listeners map[*trackedListener]struct{} // listeners being served, closed by Shutdown
	conns     map[*serverConn]struct{}      // admitted, not yet released connections
	wg        sync.WaitGroup                // Serve loops and admitted connections
}

type trackedListener struct{ net.Listener }

// serverConn is one admitted connection. forced is set when Shutdown closes
// it, so that its handler's resulting error is not reported as the client's.
// received and sent are counted by the handlers of the classic services for
// the disconnect log line; only the connection's own goroutines touch them.
type serverConn struct {
	net.Conn
	remote         net.Addr // at accept: gonet's RemoteAddr is nil once the connection is closed or reset
	forced         atomic.Bool
	received, sent int64
	digest         string // discard: the SHA-256 of what was received, for the disconnect line
}

// init applies opts. service names the service in every log line ("" for
// none).
func (s *core) init(opts ServerOptions, service string, handle connHandler) {
	s.log = opts.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	if service != "" {
		s.log = s.log.With("service", service)
	}
	s.service = service
	s.idle = opts.IdleTimeout
	if s.idle == 0 {
		s.idle = DefaultIdleTimeout
	}
	s.maxConns = opts.MaxConns
	if s.maxConns <= 0 {
		s.maxConns = DefaultMaxConns
	}
	s.handle = handle
	s.done = make(chan struct{})
	s.listeners = make(map[*trackedListener]struct{})
	s.conns = make(map[*serverConn]struct{})
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
func (s *core) Serve(ln net.Listener) error {
	tl, ok := s.addListener(ln)
	if !ok {
		return nil
	}
	defer s.removeListener(tl)
	for {
		sc, err := s.accept(ln)
		if errors.Is(err, errAcceptStop) {
			return nil
		}
		if err != nil {
			return err
		}
		go func() {
			defer s.release(sc)
			s.serveConn(sc)
		}()
	}
}

// addListener registers ln for Shutdown to close and counts its Serve loop.
// After Shutdown it closes ln instead and reports false.
func (s *core) addListener(ln net.Listener) (*trackedListener, bool) {
	tl := &trackedListener{ln}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		ln.Close()
		return nil, false
	}
	s.listeners[tl] = struct{}{}
	s.wg.Add(1)
	return tl, true
}

func (s *core) removeListener(tl *trackedListener) {
	s.mu.Lock()
	delete(s.listeners, tl)
	s.mu.Unlock()
	s.wg.Done()
}

// accept returns the next connection on ln that admit lets in. It retries
// temporary errors after a back-off that Shutdown cuts short, and keeps
// accepting (and closing) while the connection limit is reached, so the
// backlog drains. It returns errAcceptStop when ln is closed or the service is
// shutting down, and any other accept error wrapped.
func (s *core) accept(ln net.Listener) (*serverConn, error) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.shuttingDown() || errors.Is(err, net.ErrClosed) {
				return nil, errAcceptStop
			}
			if !isTemporary(err) {
				return nil, fmt.Errorf("app: accept on %v: %w", ln.Addr(), err)
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			s.log.Warn("accept failed, retrying", "addr", ln.Addr().String(), "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return nil, errAcceptStop
			}
			continue
		}
		backoff = 0
		if sc, ok := s.admit(c); ok {
			return sc, nil
		}
	}
}

func isTemporary(err error) bool {
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *core) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// admit counts c as open, or closes it at once if the service is shutting
// down or at its connection limit (with a log line). It never blocks, so the
// accept loop keeps draining the backlog even when the limit is reached. An
// admitted connection must be released exactly once when it is done.
func (s *core) admit(c net.Conn) (*serverConn, bool) {
	sc := &serverConn{Conn: c, remote: c.RemoteAddr()}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		c.Close()
		return nil, false
	}
	if len(s.conns) >= s.maxConns {
		s.mu.Unlock()
		c.Close()
		ip, port := hostPort(c.RemoteAddr())
		s.log.Warn(fmt.Sprintf("Refusing client %s: connection limit %d reached", article(ip, port), s.maxConns),
			"client", addrString(c.RemoteAddr()))
		return nil, false
	}
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	return sc, true
}

// release ends what admit started. It is safe to call again for the same
// connection (net/http's state hook may report the end twice).
func (s *core) release(sc *serverConn) {
	s.mu.Lock()
	_, ok := s.conns[sc]
	delete(s.conns, sc)
	s.mu.Unlock()
	if ok {
		s.wg.Done()
	}
}

// Shutdown stops the server in order: it closes the listeners (so Serve
// returns nil), waits for open connections to end on their own until ctx is
// done, then closes the connections still open and waits for their goroutines.
// It returns ctx.Err() if it had to close connections, joined with any
// listener Close error other than net.ErrClosed. It is safe to call more than
// once, also concurrently; every call returns only when all of the server's
// goroutines are gone.
func (s *core) Shutdown(ctx context.Context) error {
	err := s.beginShutdown()
	if s.wait(ctx) {
		return errors.Join(err, ctx.Err())
	}
	return err
}

// Close closes the listeners and all connections at once, and waits for the
// server's goroutines: Shutdown with an already cancelled context. Unlike
// Shutdown it does not report context.Canceled for the connections it closed,
// since closing them is what it was asked to do.
func (s *core) Close() error {
	err := s.beginShutdown()
	s.wait(cancelled())
	return err
}

// cancelled returns a context that is already done.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// beginShutdown marks the service as closing, so that no Serve loop or
// connection starts after, wakes accept back-offs and streams waiting on done,
// and closes the listeners. It returns their Close errors other than
// net.ErrClosed.
func (s *core) beginShutdown() error {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	lns := make([]*trackedListener, 0, len(s.listeners))
	for tl := range s.listeners {
		lns = append(lns, tl)
	}
	if s.interrupt != nil {
		for sc := range s.conns {
			s.interrupt(sc)
		}
	}
	s.mu.Unlock()

	var errs []error
	for _, tl := range lns {
		if err := tl.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("app: close listener %v: %w", tl.Addr(), err))
		}
	}
	return errors.Join(errs...)
}

// wait waits for the Serve loops and connections to end until ctx is done,
// then closes the connections still open and waits for them. It reports
// whether it had to close any. Call it after beginShutdown.
func (s *core) wait(ctx context.Context) (forced bool) {
	// No wg.Add can happen from here on: addListener and admit check
	// s.closing under s.mu before adding, so Wait cannot race with an Add
	// from zero.
	allDone := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(allDone)
	}()
	select {
	case <-allDone: // checked first: an expired ctx with nothing open is no force
		return false
	default:
	}
	select {
	case <-allDone:
		return false
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
	return forced
}

// ActiveConns reports how many connections are open.
func (s *core) ActiveConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// serveConn runs the service's handler on one connection between the
// article's log lines, and closes the connection.
func (s *core) serveConn(c *serverConn) {
	remote := c.RemoteAddr()
	ip, port := hostPort(remote)
	log := s.log.With("client", addrString(remote))
	log.Info("Client connected: " + article(ip, port))

	err := s.handle(c, log)
	switch {
	case errors.Is(err, errIdle):
		log.Info(fmt.Sprintf("Client idle for %v, closing: %s", s.idle, article(ip, port)))
	case errors.Is(err, errStalled):
		log.Info(fmt.Sprintf("Client not reading for %v, closing: %s", s.idle, article(ip, port)))
	case errors.Is(err, errShuttingDown):
		log.Info("Server shutting down, closing: " + article(ip, port))
	}
	c.Close()

	var attrs []any
	if s.service != "" {
		attrs = append(attrs, "received", c.received, "sent", c.sent)
	}
	if c.digest != "" {
		attrs = append(attrs, "sha256", c.digest)
	}
	clean := err == nil || err == io.EOF || errors.Is(err, errIdle) || errors.Is(err, errStalled) ||
		errors.Is(err, errShuttingDown) || c.forced.Load() || errors.Is(err, net.ErrClosed)
	if !clean {
		attrs = append(attrs, "err", err)
	}
	log.Info("Client disconnected", attrs...)
}

// Server is the article's ACK server. One Server may serve several listeners at
// once (say an IPv4 and an IPv6 one); it runs one goroutine per connection and
// none per line. Its Serve, Shutdown, Close and ActiveConns are the Service
// methods every TCP service of this package shares.
//
// Limits: MaxConns connections at once (more are closed with a log line); a
// connection silent for IdleTimeout is closed, and so is one whose replies
// cannot be written for IdleTimeout; at most MaxChunk+2 bytes of input and
// 16 KiB of replies are buffered per connection.
type Server struct {
	core
	chunk int // MaxChunk; tests make it smaller to exercise the splitting
}

// NewServer returns a Server with opts applied.
func NewServer(opts ServerOptions) *Server {
	s := &Server{chunk: MaxChunk}
	s.init(opts, "", s.ack)
	return s
}

// ack runs the article's conversation on one connection.
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
//
// A write that times out is reported as the error it is (the idle timeout
// also bounds writes, so a client that sends but never reads cannot pin the
// connection); a read that times out is errIdle.
func (s *Server) ack(c *serverConn, log *slog.Logger) error {
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
		if s.idle > 0 && len(b) == 0 {
			// The clock runs from the end of the last message, and a
			// message's bytes do not restart it: a client trickling a
			// byte at a time (slowloris) is closed after the idle
			// timeout like a silent one.
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
			return errIdle
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
	return err
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
	case *net.UDPAddr:
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

// RemoteAddr is the client's address as it was at accept (or, if it was gone
// already, whatever the connection says now, possibly nil).
func (c *serverConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// addrString is a.String(), or "<nil>" for no address.
func addrString(a net.Addr) string {
	if a == nil {
		return "<nil>"
	}
	return a.String()
}
