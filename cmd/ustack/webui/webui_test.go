package webui

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/tap"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	peer = netip.MustParseAddrPort("198.18.0.1:43512")
	stk  = netip.MustParseAddrPort("198.18.0.2:5000")
)

const connKey = "198.18.0.2:5000-198.18.0.1:43512"

// segment builds an IPv4 TCP segment with valid checksums.
func segment(src, dst netip.AddrPort, flags header.TCPFlags, seq, ack uint32, payload string) []byte {
	tcpLen := header.TCPMinimumSize + len(payload)
	b := make([]byte, header.IPv4MinimumSize+tcpLen)
	ip := header.IPv4(b)
	sa, da := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), Flags: header.IPv4FlagDontFragment, TTL: 64,
		Protocol: uint8(header.TCPProtocolNumber), SrcAddr: sa, DstAddr: da})
	ip.SetChecksum(^ip.CalculateChecksum())
	h := header.TCP(b[header.IPv4MinimumSize:])
	h.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack,
		DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535})
	copy(h[header.TCPMinimumSize:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, sa, da, uint16(tcpLen))
	xsum = checksum.Checksum([]byte(payload), xsum)
	h.SetChecksum(^h.CalculateChecksum(xsum))
	return b
}

// session is an nc session with the ACK server, as it crosses the link.
func session() []tap.Packet {
	const ci, si = 1000, 5000
	syn, ack, psh, fin := header.TCPFlagSyn, header.TCPFlagAck, header.TCPFlagPsh, header.TCPFlagFin
	in := func(f header.TCPFlags, seq, a uint32, p string) tap.Packet {
		b := segment(peer, stk, f, seq, a, p)
		return tap.Packet{Time: time.Now(), Dir: tap.In, Data: b, Len: len(b)}
	}
	out := func(f header.TCPFlags, seq, a uint32, p string) tap.Packet {
		b := segment(stk, peer, f, seq, a, p)
		return tap.Packet{Time: time.Now(), Dir: tap.Out, Data: b, Len: len(b)}
	}
	return []tap.Packet{
		in(syn, ci, 0, ""), out(syn|ack, si, ci+1, ""), in(ack, ci+1, si+1, ""),
		in(psh|ack, ci+1, si+1, "hello\n"), out(psh|ack, si+1, ci+7, "ACK: hello\n"),
		in(fin|ack, ci+7, si+12, ""), out(fin|ack, si+12, ci+8, ""), in(ack, ci+8, si+13, ""),
	}
}

// event is one message of the stream.
type event struct {
	typ  string
	data map[string]any
}

// stream reads a page's events into a channel until the body ends.
func stream(t *testing.T, url string) (<-chan event, func()) {
	t.Helper()
	resp, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	c := make(chan event, 1<<16)
	go func() {
		defer close(c)
		r := bufio.NewReader(resp.Body)
		var typ string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				typ = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				var m map[string]any
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m); err != nil {
					t.Errorf("event %s: %v in %q", typ, err, line)
					return
				}
				c <- event{typ, m}
			}
		}
	}()
	return c, func() { resp.Body.Close() }
}

// next returns the next event of one of the types, skipping others.
func next(t *testing.T, c <-chan event, types ...string) event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-c:
			if !ok {
				t.Fatalf("stream ended waiting for %v", types)
			}
			for _, typ := range types {
				if e.typ == typ {
					return e
				}
			}
		case <-deadline:
			t.Fatalf("no %v event within 10s", types)
		}
	}
}

// newServer starts a UI on loopback whose stack lists conns.
func newServer(t *testing.T, conns func() []stack.ConnInfo) (*Server, string) {
	t.Helper()
	snap := func() (*stack.Snapshot, error) {
		return &stack.Snapshot{Time: time.Now(), Conns: conns()}, nil
	}
	s := New(Info{Version: "test", Iface: "ustack0", Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.2/24")}},
		snap, func() uint64 { return 0 }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s.Serve()
	t.Cleanup(func() { s.Close() })
	return s, "http://" + s.Addr().String()
}

// TestHandshakeEvents: the packets of a session reach a page in order, each
// labelled as the ladder writes it, with the handshake and teardown steps and
// the stack's state; the table lists the connection open, then closed.
func TestHandshakeEvents(t *testing.T) {
	established := stack.ConnInfo{Local: stk, Remote: peer, State: "ESTABLISHED", Cwnd: 10, Ssthresh: 1 << 30}
	listed := make(chan []stack.ConnInfo, 1)
	listed <- []stack.ConnInfo{established}
	current := []stack.ConnInfo{established}
	s, url := newServer(t, func() []stack.ConnInfo {
		select {
		case current = <-listed:
		default:
		}
		return current
	})
	events, stop := stream(t, url)
	defer stop()
	if h := next(t, events, "hello"); h.data["iface"] != "ustack0" || h.data["keep"] != float64(Keep) {
		t.Errorf("hello: %v", h.data)
	}
	pkts := session()
	for _, p := range pkts[:5] {
		s.Packet(p)
	}
	want := []struct {
		dir, label, phase, step, state string
		changed                        bool
	}{
		{"in", "SYN seq=0", "handshake", "1/3", "LISTEN", true},
		{"out", "SYN-ACK seq=0 ack=1", "handshake", "2/3", "SYN-RCVD", true},
		{"in", "ACK ack=1", "handshake", "3/3", "ESTABLISHED", true},
		{"in", `PSH-ACK 1:7 "hello\n"`, "", "", "ESTABLISHED", false},
		{"out", `PSH-ACK 1:12 "ACK: hello\n"`, "", "", "ESTABLISHED", false},
	}
	last := 0.0
	for i, w := range want {
		e := next(t, events, "packet").data
		if e["dir"] != w.dir || e["label"] != w.label || e["phase"] != w.phase || e["step"] != w.step || e["state"] != w.state || e["stateChanged"] != w.changed || e["conn"] != connKey {
			t.Errorf("packet %d: got %v %q %v %v %v %v %v, want %+v", i, e["dir"], e["label"], e["phase"], e["step"], e["state"], e["stateChanged"], e["conn"], w)
		}
		if n := e["n"].(float64); n <= last {
			t.Errorf("packet %d: event number %v after %v", i, n, last)
		} else {
			last = n
		}
	}
	row := connRowOf(t, next(t, events, "conns"))
	if row["state"] != "ESTABLISHED" || row["open"] != true || row["bytesIn"] != 6.0 || row["bytesOut"] != 11.0 || row["client"] != "peer" {
		t.Errorf("table while open: %v", row)
	}

	for _, p := range pkts[5:] {
		s.Packet(p)
	}
	listed <- nil // netstack forgot it
	for {
		row = connRowOf(t, next(t, events, "conns"))
		if row["open"] == false {
			break
		}
	}
	if row["state"] != "CLOSED" || row["closedAt"] == nil {
		t.Errorf("table once closed: %v", row)
	}

	// A page that comes later gets the history first.
	late, stopLate := stream(t, url)
	defer stopLate()
	next(t, late, "hello")
	for i, w := range want {
		if e := next(t, late, "packet").data; e["label"] != w.label {
			t.Errorf("history %d: %q, want %q", i, e["label"], w.label)
		}
	}
}

func connRowOf(t *testing.T, e event) map[string]any {
	t.Helper()
	rows, _ := e.data["conns"].([]any)
	if len(rows) != 1 {
		t.Fatalf("conns: %v", e.data)
	}
	return rows[0].(map[string]any)
}

// TestStalledPage: a page that stops reading is disconnected once its queue
// is full; the stack's side never waits for it, and another page goes on
// receiving.
func TestStalledPage(t *testing.T) {
	s, url := newServer(t, func() []stack.ConnInfo { return nil })
	stalled, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := io.WriteString(stalled, "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	good, stop := stream(t, url)
	defer stop()
	next(t, good, "hello")
	waitPages(t, s, 2)

	// Feed, as the tap would, until the stalled page's queue and socket
	// buffers are full and it is dropped (bounded: 64 MiB of socket buffer
	// would not hold it): every call must return at once.
	pkts := session()
	const most = 50 * pageQueue
	start := time.Now()
	var slowest time.Duration
	rounds := 0
	for i := 0; i < most && s.PagesDropped() == 0; i++ {
		rounds++
		t0 := time.Now()
		s.Packet(pkts[i%len(pkts)])
		slowest = max(slowest, time.Since(t0))
		if i%256 == 255 {
			// Let the good page catch up, as a browser that keeps up
			// would; the stalled one reads nothing.
			for next(t, good, "packet").data["n"] != float64(i+1) {
			}
		}
	}
	t.Logf("%d packets in %v, slowest %v; %d dropped", rounds, time.Since(start), slowest, s.PagesDropped())
	if slowest > time.Second {
		t.Errorf("a packet took %v to hand to the UI: the stack waited for a page", slowest)
	}
	if s.PagesDropped() != 1 {
		t.Errorf("%d pages dropped, want the stalled one", s.PagesDropped())
	}
	s.Packet(pkts[0])
	for {
		e := next(t, good, "packet")
		if e.data["n"] == float64(rounds+1) {
			break
		}
	}
}

func waitPages(t *testing.T, s *Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		got := len(s.clients)
		s.mu.Unlock()
		if got == n {
			return
		}
	}
	t.Fatalf("want %d pages connected", n)
}

// TestReadOnly: the UI answers GET and HEAD only, and serves its page.
func TestReadOnly(t *testing.T) {
	_, url := newServer(t, func() []stack.ConnInfo { return nil })
	resp, err := http.Post(url+"/events", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
	resp, err = http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "<html") {
		t.Errorf("GET /: %s %.200s", resp.Status, body)
	}
	for _, ref := range []string{"http://", "https://"} {
		if strings.Contains(string(body), "src=\""+ref) || strings.Contains(string(body), "href=\""+ref) {
			t.Errorf("the page loads something from elsewhere (%s…): it must work offline", ref)
		}
	}
}

// TestBoundedHistory: the UI keeps at most Keep events a connection, and says
// how many it trimmed.
func TestBoundedHistory(t *testing.T) {
	s, _ := newServer(t, func() []stack.ConnInfo { return nil })
	pkts := session()
	for i := range Keep + 10 {
		s.Packet(pkts[3+i%2])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conns[connKey]
	if len(c.packets.ev) != Keep || c.packets.trimmed != 10 {
		t.Errorf("kept %d, trimmed %d; want %d, 10", len(c.packets.ev), c.packets.trimmed, Keep)
	}
}

// TestRebinding: on loopback the UI answers only requests addressed to
// loopback, so a page elsewhere cannot read it through a name of its own.
func TestRebinding(t *testing.T) {
	_, url := newServer(t, func() []stack.ConnInfo { return nil })
	for host, want := range map[string]int{"evil.example": http.StatusMisdirectedRequest, "localhost": 200, "127.0.0.1:1": 200} {
		req, _ := http.NewRequest("GET", url+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %s, want %d", host, resp.Status, want)
		}
	}
}

// TestScanKeepsLiveConnection: a port scan fills the table, but never pushes
// out a connection netstack has; a SYN on the 4-tuple of a closed connection
// starts a new one.
func TestScanKeepsLiveConnection(t *testing.T) {
	var mu sync.Mutex // the ticker reads the list too
	live := []stack.ConnInfo{{Local: stk, Remote: peer, State: "ESTABLISHED"}}
	s, _ := newServer(t, func() []stack.ConnInfo { mu.Lock(); defer mu.Unlock(); return live })
	pkts := session()
	for _, p := range pkts[:5] {
		s.Packet(p)
	}
	s.periodic()
	for port := range uint16(2 * maxConns) {
		b := segment(netip.AddrPortFrom(peer.Addr(), 10000+port), stk, header.TCPFlagSyn, 1, 0, "")
		s.Packet(tap.Packet{Time: time.Now(), Dir: tap.In, Data: b, Len: len(b)})
	}
	s.mu.Lock()
	c, ok := s.conns[connKey]
	n := len(s.conns)
	s.mu.Unlock()
	if !ok || n > maxConns {
		t.Fatalf("after the scan: the live connection kept %t, %d connections", ok, n)
	}
	for _, p := range pkts[5:] {
		s.Packet(p)
	}
	mu.Lock()
	live = nil
	mu.Unlock()
	s.periodic()
	s.Packet(pkts[0]) // the same 4-tuple again
	s.mu.Lock()
	again := s.conns[connKey]
	s.mu.Unlock()
	if again == c || again.bytesIn != 0 || len(again.packets.ev) != 1 {
		t.Errorf("a new SYN on a closed 4-tuple did not start a new connection")
	}
}
