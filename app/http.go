package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	// httpHeaderTimeout bounds how long a client may take to send a request
	// (its headers, and a body if it sends one, which no page here reads). A
	// shorter idle timeout lowers it.
	httpHeaderTimeout = 10 * time.Second
	// httpMaxHeaderBytes bounds a request's header (net/http adds 4 KiB of
	// slack); a larger one gets "431 Request Header Fields Too Large".
	httpMaxHeaderBytes = 16 << 10
	// maxConnInfo bounds the lines of HTTPOptions.ConnInfo the page shows, and
	// maxConnInfoLen each key and value.
	maxConnInfo    = 64
	maxConnInfoLen = maxLoggedLine
)

// KV is one line of what HTTPOptions.ConnInfo reports about a connection,
// such as {"state", "ESTABLISHED"} or {"cwnd", "10"}.
type KV struct{ Key, Value string }

// HTTPOptions configure an HTTPServer. The zero value is usable.
type HTTPOptions struct {
	// ServerOptions apply as for every service: Logger, the connection
	// limit, the idle timeout (between requests on a kept-alive connection,
	// and for each write of a response), and MaxBytes, the largest n of
	// /bytes?n=.
	ServerOptions
	// StackName says which TCP/IP stack serves the connection, for the page
	// at /: "gVisor netstack (userspace)", "the kernel". "": the page does not
	// say.
	StackName string
	// ConnInfo, if not nil, returns what the stack knows about the TCP
	// connection from remote (the client) to local (this server), such as
	// its state, congestion window, RTT and counters; the page at / lists it
	// in order (the first 64 lines, each key and value cut at 200 bytes).
	// It is called on the request's goroutine, once per request for /, so it
	// must be safe for concurrent use and should not block. nil: the page
	// shows only the two addresses.
	ConnInfo func(local, remote net.Addr) []KV
}

// HTTPServer is a small HTTP/1.1 server (net/http) that shows a client its
// own TCP connection:
//
//   - GET / answers a plain-text page (HTML when the request accepts
//     text/html) with the client's address and port, the server's, the
//     stack that serves them (HTTPOptions.StackName) and what
//     HTTPOptions.ConnInfo reports about the connection.
//   - GET /bytes?n=N answers N bytes of RFC 864's chargen pattern, generated
//     as they are sent (never held whole), for throughput tests with curl.
//     n must be a decimal from 0 to MaxBytes; anything else gets 400 with a
//     one-line explanation.
//   - Any other path gets 404; a method other than GET or HEAD on / or
//     /bytes gets 405. A malformed request gets net/http's 400 and the
//     connection is closed; the server goes on serving the others.
//
// Limits: the connection limit, Serve, Shutdown, Close and ActiveConns are
// the Service machinery shared with the other services (a connection over the
// limit is closed with a log line before net/http sees it). A request must
// arrive within 10s, or the idle timeout if shorter (ReadHeaderTimeout and
// ReadTimeout); its header may have 16 KiB (MaxHeaderBytes); a kept-alive
// connection is closed after the idle timeout without a request (with no
// idle timeout, after 10s). Each response must make progress: the idle
// timeout is the write deadline of a response (WriteTimeout), and /bytes
// renews it before each 64 KiB it writes (http.ResponseController), so a
// long download may take as long as it needs while a client that stops
// reading is dropped after the idle timeout. With no idle timeout, writes
// have no deadline. Shutdown lets running requests finish until its ctx is
// done, closing idle kept-alive connections at once.
//
// Log lines carry service=http: one at Info per request ("GET /bytes?n=1000
// from 198.18.0.1 43512: 200, 1000 bytes"), and connection lines at Debug.
type HTTPServer struct {
	core
	srv       *http.Server
	stackName string
	connInfo  func(local, remote net.Addr) []KV
	maxBytes  int64 // < 0: no limit
}

// connKey is the request context key of the connection a request came on.
type connKey struct{}

// NewHTTPServer returns an HTTPServer with opts applied.
func NewHTTPServer(opts HTTPOptions) *HTTPServer {
	s := &HTTPServer{stackName: opts.StackName, connInfo: opts.ConnInfo, maxBytes: opts.MaxBytes}
	if s.maxBytes == 0 {
		s.maxBytes = DefaultMaxBytes
	}
	s.init(opts.ServerOptions, "http", nil)
	header := httpHeaderTimeout
	var idle, write time.Duration // 0: net/http's "none" (IdleTimeout 0 falls back to ReadTimeout)
	if s.idle > 0 {
		header = min(header, s.idle)
		idle, write = s.idle, s.idle
	}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: header,
		ReadTimeout:       header,
		WriteTimeout:      write,
		IdleTimeout:       idle,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ConnState:         s.connState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s
}

// Serve serves HTTP on connections accepted from ln until Shutdown or Close
// is called or ln is closed, and then returns nil; see Service.Serve.
func (s *HTTPServer) Serve(ln net.Listener) error {
	tl, ok := s.addListener(ln)
	if !ok {
		return nil
	}
	defer s.removeListener(tl)
	err := s.srv.Serve(&admitListener{Listener: ln, core: &s.core})
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, errAcceptStop) {
		return nil
	}
	return err
}

// Shutdown closes the listeners and the idle connections at once, lets
// requests in progress finish until ctx is done, then closes what is left;
// see Service.Shutdown.
func (s *HTTPServer) Shutdown(ctx context.Context) error {
	err := s.beginShutdown()
	forced := false
	if herr := s.srv.Shutdown(ctx); herr != nil {
		if ctx.Err() != nil {
			forced = true
			s.srv.Close() // requests still running: end them
		} else {
			err = errors.Join(err, fmt.Errorf("app: http: shutdown: %w", herr))
		}
	}
	if s.wait(ctx) || forced {
		return errors.Join(err, ctx.Err())
	}
	return err
}

// Close closes the listeners and every connection at once and waits for the
// server's goroutines; see Service.Close.
func (s *HTTPServer) Close() error {
	err := s.beginShutdown()
	if herr := s.srv.Close(); herr != nil {
		err = errors.Join(err, fmt.Errorf("app: http: close: %w", herr))
	}
	s.wait(cancelled())
	return err
}

// admitListener hands net/http only the connections the shared machinery
// admits: accept retries temporary errors with its back-off and closes
// connections over the limit with the log line. A connection stays counted
// until net/http reports it closed (connState).
type admitListener struct {
	net.Listener
	core *core
}

func (l *admitListener) Accept() (net.Conn, error) {
	sc, err := l.core.accept(l.Listener)
	if err != nil {
		return nil, err
	}
	return sc, nil
}

// Close closes the listener; a second Close (Shutdown's, after net/http's or
// the other way round) is not an error.
func (l *admitListener) Close() error {
	if err := l.Listener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// connState counts a connection out when net/http is done with it:
// StateClosed is reported at the very end of the connection's goroutine.
func (s *HTTPServer) connState(c net.Conn, state http.ConnState) {
	sc, ok := c.(*serverConn)
	if !ok {
		return
	}
	switch state {
	case http.StateNew:
		ip, port := hostPort(c.RemoteAddr())
		s.log.Debug("Client connected: "+article(ip, port), "client", addrString(c.RemoteAddr()))
	case http.StateClosed, http.StateHijacked:
		s.log.Debug("Client disconnected", "client", addrString(c.RemoteAddr()))
		s.release(sc)
	}
}

// serveHTTP routes a request and logs it.
func (s *HTTPServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &countingWriter{ResponseWriter: w}
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	var err error
	switch {
	case c == nil:
		http.Error(rw, "internal error: request without a connection", http.StatusInternalServerError)
	case r.URL.Path != "/" && r.URL.Path != "/bytes":
		http.Error(rw, "404 page not found: this server has / and /bytes?n=<count>", http.StatusNotFound)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		rw.Header().Set("Allow", "GET, HEAD")
		http.Error(rw, "405 method not allowed: use GET", http.StatusMethodNotAllowed)
	case r.URL.Path == "/":
		err = s.page(rw, r, c.LocalAddr(), c.RemoteAddr())
	default:
		err = s.bytes(rw, r)
	}

	remote := r.RemoteAddr
	ip, port := remote, ""
	if c != nil {
		remote = addrString(c.RemoteAddr())
		ip, port = hostPort(c.RemoteAddr())
	}
	msg := fmt.Sprintf("%s %s from %s: %d, %d bytes",
		loggable([]byte(r.Method)), loggable([]byte(r.RequestURI)), article(ip, port), rw.status(), rw.n)
	if err != nil {
		s.log.Info(msg, "client", remote, "err", err)
	} else {
		s.log.Info(msg, "client", remote)
	}
}

// countingWriter notes the status and counts the body bytes of a response,
// for the log line. Unwrap lets http.ResponseController reach the original.
type countingWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *countingWriter) status() int {
	if w.code == 0 {
		return http.StatusOK // net/http's default when the handler writes nothing
	}
	return w.code
}

// page writes the page at /: the two ends of the connection, the stack, and
// ConnInfo's lines. It is built whole (it is small and bounded) so that it
// goes out with a Content-Length.
func (s *HTTPServer) page(w http.ResponseWriter, r *http.Request, local, remote net.Addr) error {
	var info []KV
	if s.connInfo != nil {
		info = s.connInfo(local, remote)
		info = info[:min(len(info), maxConnInfo)]
	}
	cip, cport := hostPort(remote)
	sip, sport := hostPort(local)
	limit := "any n"
	if s.maxBytes >= 0 {
		limit = fmt.Sprintf("n from 0 to %d", s.maxBytes)
	}

	var b bytes.Buffer
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		e := html.EscapeString
		fmt.Fprintf(&b, "<!doctype html>\n<meta charset=utf-8>\n<title>ustack</title>\n<h1>Hello from ustack</h1>\n")
		fmt.Fprintf(&b, "<p>You are <b>%s</b> port <b>%s</b>; this server is <b>%s</b> port <b>%s</b>.</p>\n",
			e(cip), e(cport), e(sip), e(sport))
		if s.stackName != "" {
			fmt.Fprintf(&b, "<p>This page was served by %s: that stack holds the TCP connection it came over.</p>\n", e(s.stackName))
		}
		if len(info) > 0 {
			fmt.Fprintf(&b, "<p>The connection, as that stack sees it:</p>\n<table>\n")
			for _, kv := range info {
				fmt.Fprintf(&b, "<tr><th align=left>%s</th><td>%s</td></tr>\n", e(clip(kv.Key)), e(clip(kv.Value)))
			}
			fmt.Fprintf(&b, "</table>\n")
		}
		fmt.Fprintf(&b, "<p><a href=\"/bytes?n=1000000\">/bytes?n=1000000</a> sends a million bytes of RFC 864's chargen pattern (%s).</p>\n", limit)
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(&b, "Hello from ustack.\n\n")
		fmt.Fprintf(&b, "You are %s port %s; this server is %s port %s.\n", cip, cport, sip, sport)
		if s.stackName != "" {
			fmt.Fprintf(&b, "This page was served by %s: that stack holds the TCP connection it came over.\n", s.stackName)
		}
		if len(info) > 0 {
			fmt.Fprintf(&b, "\nThe connection, as that stack sees it:\n")
			width := 0
			for _, kv := range info {
				width = max(width, len(clip(kv.Key)))
			}
			for _, kv := range info {
				fmt.Fprintf(&b, "  %-*s  %s\n", width, clip(kv.Key), clip(kv.Value))
			}
		}
		fmt.Fprintf(&b, "\nGET /bytes?n=1000000 sends a million bytes of RFC 864's chargen pattern (%s).\n", limit)
	}
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	_, err := w.Write(b.Bytes()) // for HEAD, net/http sends the headers only
	return err
}

// clip bounds one ConnInfo key or value, on one line.
func clip(s string) string {
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	if len(s) <= maxConnInfoLen {
		return s
	}
	return loggable([]byte(s))
}

// bytes streams n bytes of the chargen pattern, from the pattern's start,
// renewing the write deadline before each write.
func (s *HTTPServer) bytes(w http.ResponseWriter, r *http.Request) error {
	n, problem := s.parseN(r.URL.RawQuery)
	if problem != "" {
		http.Error(w, problem, http.StatusBadRequest)
		return nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=us-ascii")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	rc := http.NewResponseController(w)
	pattern := chargenPattern()
	for sent := int64(0); sent < n; {
		if s.idle > 0 {
			if err := rc.SetWriteDeadline(time.Now().Add(s.idle)); err != nil {
				return err
			}
		}
		off := int(sent % chargenPeriod)
		k := int(min(chargenWriteSize, n-sent))
		m, err := w.Write(pattern[off : off+k])
		sent += int64(m)
		if err != nil {
			return err
		}
	}
	return nil
}

// parseN reads n from /bytes' query. problem, if not "", is the one-line
// explanation for the 400.
func (s *HTTPServer) parseN(rawQuery string) (n int64, problem string) {
	usage := "give the number of bytes as a decimal n, as in /bytes?n=1000"
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return 0, "malformed query: " + usage
	}
	v, ok := q["n"]
	switch {
	case !ok:
		return 0, "missing n: " + usage
	case len(v) > 1:
		return 0, "more than one n: " + usage
	}
	n, err = strconv.ParseInt(v[0], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Sprintf("n=%q is not a number of bytes: %s", loggable([]byte(v[0])), usage)
	}
	if s.maxBytes >= 0 && n > s.maxBytes {
		return 0, fmt.Sprintf("n=%d is more than this server sends: at most %d bytes", n, s.maxBytes)
	}
	return n, ""
}
