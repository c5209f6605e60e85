// Package webui is ustack's live web view: a page, embedded in the binary,
// that draws every TCP connection of the running stack as a ladder diagram,
// with its state machine, its congestion window and the counters of each
// layer, fed by the same taps as --trace and --tcp-probe.
//
// # The event stream
//
// GET /events is Server-Sent Events. Each message has a type (the SSE
// "event:" field) and a JSON body; times t are milliseconds since the UI
// started. On every (re)connection the server sends hello, then the history
// it keeps (the packets and samples of the connections it remembers, in
// order), then live events:
//
//   - hello: version, interface, the stack's addresses, and keep, how many
//     packet events it keeps per connection.
//   - packet: one packet that crossed the TUN device, decoded as the trace
//     decodes it: dir ("in": kernel → stack), conn (the 4-tuple, stack side
//     first, as in the trace; "" for ICMP), label (the ladder's text), the
//     trace line, flags, payload length, retransmission, fault injection's
//     drop or note, the stack's TCP state after it, the handshake or teardown
//     step, and its headers layer by layer.
//   - sample: netstack's TCP probe after each segment it handled: cwnd,
//     ssthresh (segments), srtt, rttvar, rto (ms), segments in flight.
//   - conns, every second: the connections table. Closed connections stay in
//     it, open=false, for closedLinger.
//   - counters, every second: each layer's counters.
//   - lost: how many events the UI's taps lost because it fell behind.
//
// A browser that does not keep up never slows the stack: events reach each
// page through a bounded queue, and a page whose queue is full is
// disconnected (its EventSource reconnects and starts over from the
// history). The taps themselves lose events rather than wait, and the page
// is told how many.
package webui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/tap"
	"github.com/ustack/ustack/stack/trace"
)

//go:embed static
var static embed.FS

// Limits of what the UI keeps and queues.
const (
	// Keep is how many packet events, and how many probe samples, the UI
	// remembers per connection for a page that connects later; older ones
	// are trimmed (the page says how many).
	Keep = 1000
	// maxKeptBytes bounds the memory of all the kept events: past it, the
	// connection that keeps most loses its oldest tenth.
	maxKeptBytes = 32 << 20
	// maxConns bounds the connections remembered; past it the oldest closed
	// one, else the oldest, is forgotten.
	maxConns = 128
	// closedLinger is how long a closed connection stays in the table.
	closedLinger = time.Minute
	// udpIdle is how long a UDP flow without packets counts as open.
	udpIdle = 30 * time.Second
	// gone is how long a TCP connection netstack never listed may go without
	// packets before it counts as closed (a SYN answered by a RST, a handshake
	// that never finished).
	gone = 10 * time.Second
	// pageQueue is how many events may wait for one page; a page that lets
	// more pile up is disconnected.
	pageQueue = 4096
	// maxPages bounds the pages served at once; more are answered 503.
	maxPages = 16
	// replayLimit bounds how long a page may take to receive the history.
	replayLimit = 30 * time.Second
	// writeTimeout bounds one write to a page.
	writeTimeout = 10 * time.Second
	// tick is how often the table and the counters are sent.
	tick = time.Second
)

// Info describes the stack for the page's header.
type Info struct {
	Version string
	Iface   string
	Addrs   []netip.Prefix
}

// Server is the web view of one stack. Packet and Sample feed it; Serve
// answers browsers.
type Server struct {
	info     Info
	snapshot func() (*stack.Snapshot, error)
	lost     func() uint64
	log      *slog.Logger
	start    time.Time
	n        atomic.Uint64 // the last event number given

	tr *trace.Tracer // owned by the goroutine that calls Packet

	mu                      sync.Mutex
	conns                   map[string]*connHist // guarded by mu
	clients                 map[*page]struct{}   // guarded by mu
	lastLost                uint64               // guarded by mu: the lost count last sent
	kept                    int                  // guarded by mu: bytes of the events kept
	lastConns, lastCounters []byte               // guarded by mu: the table and counters last sent, for a new page

	pagesDropped atomic.Uint64

	srv       *http.Server
	ln        net.Listener
	stop      chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // the server, the ticker, and the event streams
}

// New returns the web view of a stack. snapshot reads its counters and
// connections; lost tells how many events the UI's taps lost.
func New(info Info, snapshot func() (*stack.Snapshot, error), lost func() uint64, log *slog.Logger) *Server {
	return &Server{
		info: info, snapshot: snapshot, lost: lost, log: log, start: time.Now(),
		tr:    trace.New(trace.Options{}),
		conns: make(map[string]*connHist), clients: make(map[*page]struct{}),
		stop: make(chan struct{}),
	}
}

// SetAddrs gives the stack's addresses, once it has them.
func (s *Server) SetAddrs(addrs []netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.info.Addrs = addrs
}

// Listen opens the UI's address; Serve answers on it.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln = ln
	return nil
}

// Addr is the address the UI listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers browsers on the listener of Listen until Close.
func (s *Server) Serve() {
	sub, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", s.events)
	// No icon: say so without an error in the browser's console.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.Handle("GET /", http.FileServerFS(sub))
	s.srv = &http.Server{
		Handler:           s.guard(mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("ui: " + err.Error())
		}
	}()
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.periodic()
			}
		}
	}()
}

// guard answers GET and HEAD only: the page can change nothing. On a
// loopback address it also answers only requests addressed to loopback, so
// that a web page elsewhere cannot read the stream by pointing a name of its
// own at 127.0.0.1 (DNS rebinding).
func (s *Server) guard(h http.Handler) http.Handler {
	loopback := false
	if ap, err := netip.ParseAddrPort(s.ln.Addr().String()); err == nil {
		loopback = ap.Addr().IsLoopback()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the ustack UI is read-only", http.StatusMethodNotAllowed)
			return
		}
		if loopback && !loopbackHost(r.Host) {
			http.Error(w, "the ustack UI answers only requests to localhost, 127.0.0.1 or [::1]", http.StatusMisdirectedRequest)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
		h.ServeHTTP(w, r)
	})
}

// loopbackHost tells whether a Host header names this machine's loopback.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// Close stops serving: pages are disconnected. Safe to call twice.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.stop) // the event streams return; no new one starts
		s.mu.Unlock()
		if s.srv != nil {
			// A stream blocked writing to a page that reads nothing holds
			// Shutdown up: close it after a short while.
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			if err := s.srv.Shutdown(ctx); err != nil {
				s.closeErr = s.srv.Close()
			}
		} else if s.ln != nil {
			s.closeErr = s.ln.Close()
		}
		s.wg.Wait()
	})
	return s.closeErr
}

// PagesDropped is how many pages were disconnected for falling behind.
func (s *Server) PagesDropped() uint64 { return s.pagesDropped.Load() }

// since is t in the page's clock.
func (s *Server) since(t time.Time) float64 {
	if t.IsZero() {
		t = time.Now()
	}
	return float64(t.Sub(s.start).Microseconds()) / 1000
}

// Packet feeds one packet of the taps; the calls come from one goroutine.
func (s *Server) Packet(p tap.Packet) {
	d := s.tr.Decode(p)
	e := newPacketEvent(d, d.String())
	e.N, e.T = s.n.Add(1), s.since(p.Time)
	s.mu.Lock()
	defer s.mu.Unlock()
	var c *connHist
	if d.Conn != "" {
		c = s.conn(e.Conn, d, p.Time)
		// The trace shows the state on every segment that opens or closes
		// the connection; the ladder marks only real changes.
		e.StateChanged = d.State != "" && d.State != c.state && !lostIn(d)
	}
	msg := encode("packet", e)
	if c != nil {
		s.keep(c.packet(d, msg))
	}
	s.broadcast(msg)
}

// Sample feeds one probe sample; the calls come from one goroutine.
func (s *Server) Sample(x stack.TCPSample) {
	key := x.Local.String() + "-" + x.Remote.String()
	e := &sampleEvent{
		T: s.since(x.Time), Conn: key, Cwnd: x.Cwnd, Ssthresh: x.Ssthresh,
		SRTT: ms(x.SRTT), RTTVar: ms(x.RTTVar), RTO: ms(x.RTO), InFlight: x.InFlight,
		MSS: x.MSS, SndWnd: x.SndWnd, FastRecovery: x.FastRecovery,
	}
	e.N = s.n.Add(1)
	msg := encode("sample", e)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[key]; ok {
		s.keep(c.samples.add(msg))
		c.lastSample = &x
	}
	s.broadcast(msg)
}

// conn returns the history of the connection of d, making it (and
// forgetting another when there are too many). A SYN on the 4-tuple of a
// closed connection starts a new one. Call with s.mu held.
func (s *Server) conn(key string, d *trace.Decoded, now time.Time) *connHist {
	if now.IsZero() {
		now = time.Now()
	}
	if c, ok := s.conns[key]; ok {
		if d.Flags != "SYN" || !c.ended() {
			return c
		}
		s.forget(c)
	}
	if len(s.conns) >= maxConns {
		s.forgetOne()
	}
	c := newConnHist(key, d.Transport, now)
	s.conns[key] = c
	return c
}

// keep accounts for n more bytes kept and trims the largest history while
// all of them take more than maxKeptBytes. Call with s.mu held.
func (s *Server) keep(n int) {
	s.kept += n
	for s.kept > maxKeptBytes {
		var big *ring
		for _, c := range s.conns {
			for _, r := range [...]*ring{&c.packets, &c.samples} {
				if big == nil || r.bytes > big.bytes {
					big = r
				}
			}
		}
		if big == nil || len(big.ev) == 0 {
			return
		}
		before := big.bytes
		big.trim(max(len(big.ev)/10, 1))
		s.kept -= before - big.bytes
	}
}

// forget drops a connection's history. Call with s.mu held.
func (s *Server) forget(c *connHist) {
	s.kept -= c.packets.bytes + c.samples.bytes
	delete(s.conns, c.key)
}

// forgetOne drops one connection to make room, never one netstack lists now:
// the connection a person is watching must not be pushed out by a port scan.
// Of the others it drops the closed one seen least recently, else the one
// seen least recently. Call with s.mu held.
func (s *Server) forgetOne() {
	var victim *connHist
	better := func(c *connHist) bool {
		if (c.closedAt.IsZero()) != (victim.closedAt.IsZero()) {
			return !c.closedAt.IsZero()
		}
		return c.last.Before(victim.last)
	}
	for _, c := range s.conns {
		if c.live {
			continue
		}
		if victim == nil || better(c) {
			victim = c
		}
	}
	if victim != nil {
		s.forget(victim)
	}
}

// broadcast queues msg for every page; a page whose queue is full is
// disconnected rather than waited for. Call with s.mu held.
func (s *Server) broadcast(msg []byte) {
	for p := range s.clients {
		select {
		case p.c <- msg:
		default:
			delete(s.clients, p)
			p.drop()
			s.pagesDropped.Add(1)
		}
	}
}

// periodic sends the connections table and the counters, and what the taps
// lost since last time.
func (s *Server) periodic() {
	snap, err := s.snapshot()
	if err != nil {
		return
	}
	now := time.Now()
	t := s.since(now)
	lost := s.lost()
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := s.table(snap, now)
	s.lastConns = encode("conns", &connsEvent{T: t, Conns: rows})
	s.broadcast(s.lastConns)
	faults := "no faults"
	if snap.Faults != nil {
		faults = snap.Faults.Settings
	}
	s.lastCounters = encode("counters", &countersEvent{T: t, Layers: counters(snap), Faults: faults})
	s.broadcast(s.lastCounters)
	if lost != s.lastLost {
		s.lastLost = lost
		s.broadcast(encode("lost", &lostEvent{T: t, N: lost, Why: "the UI's taps fell behind the stack"}))
	}
}

// table merges netstack's connections with the ones the UI saw on the wire,
// marks as closed the ones netstack no longer has, and forgets those closed
// longer than closedLinger. Call with s.mu held.
func (s *Server) table(snap *stack.Snapshot, now time.Time) []connRow {
	live := make(map[string]*stack.ConnInfo, len(snap.Conns))
	for i := range snap.Conns {
		ci := &snap.Conns[i]
		if ci.State == "LISTEN" || ci.Remote.Port() == 0 {
			continue
		}
		key := ci.Local.String() + "-" + ci.Remote.String()
		live[key] = ci
		if c, ok := s.conns[key]; ok {
			c.live = true
			continue
		}
		// A connection that sent nothing since the UI started.
		if len(s.conns) >= maxConns {
			s.forgetOne()
		}
		if len(s.conns) < maxConns {
			c := newConnHist(key, "TCP", now)
			c.live = true
			s.conns[key] = c
		}
	}
	rows := make([]connRow, 0, len(s.conns))
	for key, c := range s.conns {
		ci := live[key]
		c.update(ci, now)
		if !c.closedAt.IsZero() && now.Sub(c.closedAt) > closedLinger {
			s.forget(c)
			continue
		}
		rows = append(rows, c.row(ci, s.since))
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := s.conns[rows[i].Conn], s.conns[rows[j].Conn]
		if !a.first.Equal(b.first) {
			return a.first.Before(b.first)
		}
		return rows[i].Conn < rows[j].Conn
	})
	return rows
}

// encode frames one event for the stream.
func encode(typ string, v any) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own types, whose floats are times and durations: a
		// bug, which must not take the stack down with it.
		body, _ = json.Marshal(map[string]string{"error": fmt.Sprintf("encoding %s: %v", typ, err)})
		typ = "error"
	}
	msg := make([]byte, 0, len(body)+len(typ)+16)
	msg = append(msg, "event: "...)
	msg = append(msg, typ...)
	msg = append(msg, "\ndata: "...)
	msg = append(msg, body...)
	return append(msg, "\n\n"...)
}
