package trace

import (
	"container/list"
	"net/netip"
	"strconv"
	"time"

	"github.com/ustack/ustack/stack/tap"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
)

const (
	// maxConns bounds the TCP connections tracked; past it, the least
	// recently seen is forgotten.
	maxConns = 4096
	// closedLinger is how long a connection is remembered after both FINs
	// were acknowledged or a RST crossed, so that late retransmissions still
	// read right. It is measured on the packets' own times.
	closedLinger = time.Minute
	// sweepEvery is how often, in packet time, closed connections are looked
	// for.
	sweepEvery = 5 * time.Second
)

// connKey is a TCP connection's 4-tuple, the userspace stack's side first,
// so that both directions find the same connection.
type connKey struct {
	stack, peer netip.AddrPort
}

// The two sides of a connection, as indexes of conn.f.
const (
	stackSide = 0 // the userspace stack: it sends the packets that go out
	peerSide  = 1 // the kernel's side: it sends the packets that come in
)

// flow is what one side has sent: its sequence space, and its
// acknowledgments of the other side's.
type flow struct {
	base  uint32 // ISN, or the first sequence number seen mid-stream
	known bool   // base is set
	syn   bool   // base is the ISN of a SYN seen or implied

	sent bool   // a segment occupying sequence space was seen
	next uint32 // the highest end (seq + length) seen

	fin      bool
	finEnd   uint32 // the sequence number after the FIN
	finOrder int    // 1 for the first FIN of the connection, 2 for the second
	finAcked bool

	acked      uint32 // the highest acknowledgment sent: the other side's acknowledged edge
	ackedKnown bool
	ackSeen    bool
	lastAck    uint32
	lastWin    uint16
}

// tcpState is a state of RFC 9293 section 3.3.2.
type tcpState uint8

const (
	stUnknown tcpState = iota
	stListen
	stSynSent
	stSynRcvd
	stEstablished
	stFinWait1
	stFinWait2
	stClosing
	stTimeWait
	stCloseWait
	stLastAck
	stClosed
)

var stateNames = [...]string{
	stUnknown:     "",
	stListen:      "LISTEN",
	stSynSent:     "SYN-SENT",
	stSynRcvd:     "SYN-RCVD",
	stEstablished: "ESTABLISHED",
	stFinWait1:    "FIN-WAIT-1",
	stFinWait2:    "FIN-WAIT-2",
	stClosing:     "CLOSING",
	stTimeWait:    "TIME-WAIT",
	stCloseWait:   "CLOSE-WAIT",
	stLastAck:     "LAST-ACK",
	stClosed:      "CLOSED",
}

// conn is one tracked TCP connection.
type conn struct {
	key    connKey
	name   string // Decoded.Conn
	f      [2]flow
	client int // the side that sent the first SYN: stackSide, peerSide, or -1
	state  tcpState
	// handshake is true once the third segment of the handshake was seen (or
	// assumed, mid-stream).
	handshake bool
	fins      int
	closed    bool // both FINs acknowledged, or a RST
	closedAt  time.Time
	elem      *list.Element
}

// seqAfter tells whether a comes after b in sequence space (RFC 9293
// section 3.4: comparisons are modulo 2**32).
func seqAfter(a, b uint32) bool { return seqnum.Value(b).LessThan(seqnum.Value(a)) }

// seqBefore tells whether a comes before b in sequence space.
func seqBefore(a, b uint32) bool { return seqnum.Value(a).LessThan(seqnum.Value(b)) }

// keyOf returns the connection of a TCP segment and the side that sent it.
func keyOf(d *Decoded) (connKey, int) {
	src, dst := netip.AddrPortFrom(d.Src, d.SrcPort), netip.AddrPortFrom(d.Dst, d.DstPort)
	if d.Dir == tap.Out {
		return connKey{stack: src, peer: dst}, stackSide
	}
	return connKey{stack: dst, peer: src}, peerSide
}

// role names a side for the annotations: Client is whichever sent the first
// SYN, the stack when it dials out. Mid-stream, nobody knows.
func (c *conn) role(side int) string {
	switch {
	case c.client < 0 && side == stackSide:
		return "Stack"
	case c.client < 0:
		return "Peer"
	case c.client == side:
		return "Client"
	}
	return "Server"
}

// learnISN records the initial sequence number of side; the other side's
// acknowledged edge starts there.
func (c *conn) learnISN(side int, isn uint32) {
	f := &c.f[side]
	f.base, f.known, f.syn = isn, true, true
	o := &c.f[1-side]
	o.acked, o.ackedKnown = isn, true
}

// trackTCP updates the connection of the TCP segment in d and annotates d:
// relative sequence numbers, what the segment does, the stack's state.
func (t *Tracer) trackTCP(d *Decoded) {
	key, s := keyOf(d)
	r := 1 - s
	flags := header.TCPFlags(d.TCPFlags)
	syn, ack := flags.Contains(header.TCPFlagSyn), flags.Contains(header.TCPFlagAck)
	fin, rst := flags.Contains(header.TCPFlagFin), flags.Contains(header.TCPFlagRst)
	seq, ackn := d.RawSeq, d.RawAck

	c := t.conns[key]
	if c != nil && syn && !ack && (c.closed || c.state == stClosed || c.state == stTimeWait) {
		// A new connection on the 4-tuple of one that ended.
		t.forget(c)
		c = nil
	}
	fresh := c == nil
	if fresh {
		c = t.newConn(key)
	} else {
		t.lru.MoveToFront(c.elem)
	}
	d.Conn = c.name
	snd, rcv := &c.f[s], &c.f[r]

	if fresh {
		switch {
		case syn && !ack:
			c.client = s
		case syn && ack:
			// The SYN was missed; its acknowledgment tells its ISN.
			c.client = r
			c.learnISN(r, ackn-1)
			rcv.sent, rcv.next = true, ackn
		default:
			// Without the handshake the state can only be assumed.
			c.state, c.handshake = stEstablished, true
			d.MidStream = true
			d.note("mid-stream")
		}
	}
	if syn && !snd.syn {
		c.learnISN(s, seq)
	} else if !snd.known {
		// Mid-stream: the first sequence number seen counts as 0, and as
		// the edge the other side has acknowledged.
		snd.base, snd.known = seq, true
		if !rcv.ackedKnown {
			rcv.acked, rcv.ackedKnown = seq, true
		}
	}
	if ack && !rcv.known {
		// Mid-stream: the other side's next byte counts as its 0.
		rcv.base, rcv.known = ackn, true
		if !snd.ackedKnown {
			snd.acked, snd.ackedKnown = ackn, true
		}
	}
	d.Seq = seq - snd.base
	d.Ack = 0
	if ack {
		d.Ack = ackn - rcv.base
	}
	for _, b := range d.Options.SACK {
		d.SACK = append(d.SACK, SACKBlock{b.Start - rcv.base, b.End - rcv.base})
	}

	// What the segment does in sequence space (RFC 9293 section 3.4: SYN
	// and FIN occupy one sequence number each).
	plen := uint32(d.PayloadLen)
	segLen := plen
	if syn {
		segLen++
	}
	if fin {
		segLen++
	}
	end := seq + segLen
	pure := ack && plen == 0 && !syn && !fin && !rst
	// A keep-alive (RFC 9293 section 3.8.4) is sent on an idle connection,
	// everything acknowledged, with the sequence number of the last byte
	// sent and at most that byte; the same byte unacknowledged is a
	// retransmission.
	idle := rcv.ackedKnown && !seqBefore(rcv.acked, snd.next)
	keepAlive := !syn && !fin && !rst && plen <= 1 && snd.sent && seq == snd.next-1 && idle
	retrans := segLen > 0 && !rst && !keepAlive && snd.sent && !seqAfter(end, snd.next)
	finAckedNow := ack && !rst && rcv.fin && !rcv.finAcked && !seqBefore(ackn, rcv.finEnd)
	hs3 := false

	switch {
	case rst:
	case syn && !ack && c.client == s:
		d.note("handshake 1/3: Client → SYN → Server")
	case syn && !ack:
		d.note("simultaneous open: " + c.role(s) + " → SYN → " + c.role(r))
	case syn && c.client == r:
		d.note("handshake 2/3: Server → SYN-ACK → Client")
	case syn:
		d.note("handshake: " + c.role(s) + " → SYN-ACK → " + c.role(r))
	case ack && !c.handshake && c.client == s && rcv.syn && seqAfter(ackn, rcv.base):
		d.note("handshake 3/3: Client → ACK → Server")
		c.handshake, hs3 = true, true
	}
	if fin && !rst {
		n := snd.finOrder
		if n == 0 {
			n = c.fins + 1
		}
		d.note("teardown " + strconv.Itoa(n) + "/2: " + c.role(s) + " → FIN → " + c.role(r))
	}
	switch {
	case rst:
		d.note("reset")
	case keepAlive:
		d.note("keep-alive")
	case retrans:
		d.Retransmission = true
		d.note("retransmission")
	case plen > 0:
		d.note("data")
	}
	if ack && !rst && snd.ackedKnown && seqAfter(ackn, snd.acked) {
		// Count bytes only: the SYN's and the FIN's sequence numbers are
		// not data.
		n := int64(ackn - snd.acked)
		if rcv.syn && snd.acked == rcv.base {
			n--
		}
		if finAckedNow {
			n--
		}
		if pure && n > 0 {
			d.note("acknowledges " + strconv.FormatInt(n, 10) + " bytes")
		}
	}
	if finAckedNow && !fin {
		d.note("teardown: FIN acknowledged")
	}
	switch {
	case rst:
	case d.Window == 0:
		// RFC 9293 section 3.8.6.1: the receiver has no room; the sender
		// must probe.
		d.ZeroWindow = true
		d.note("flow control: zero window")
	case pure && snd.ackSeen && ackn == snd.lastAck && d.Window != snd.lastWin:
		d.note("flow control: window update")
	case pure && snd.ackSeen && ackn == snd.lastAck && !keepAlive && rcv.sent && seqAfter(rcv.next, ackn):
		// The same acknowledgment again while data is outstanding: a
		// segment after the acknowledged edge arrived out of order, or
		// one was lost (RFC 5681 section 2).
		d.DuplicateACK = true
		d.note("duplicate ACK")
	}

	// Remember.
	if segLen > 0 && !rst {
		if !snd.sent || seqAfter(end, snd.next) {
			snd.next = end
		}
		snd.sent = true
	}
	if fin && !rst && !snd.fin {
		c.fins++
		snd.fin, snd.finEnd, snd.finOrder = true, end, c.fins
	}
	if ack && !rst && !d.lostIn {
		if !snd.ackedKnown || seqAfter(ackn, snd.acked) {
			snd.acked, snd.ackedKnown = ackn, true
		}
		if finAckedNow {
			rcv.finAcked = true
		}
		snd.lastAck, snd.lastWin, snd.ackSeen = ackn, d.Window, true
	}

	prev := c.state
	if !d.lostIn {
		c.advance(s, syn, ack, fin, rst, ackn)
	}
	d.State = stateNames[c.state]
	opensOrCloses := syn || fin || rst || hs3 || finAckedNow
	d.ShowState = c.state != stListen && c.state != stUnknown && (c.state != prev || opensOrCloses) && !d.lostIn

	if !c.closed && (rst || (c.f[stackSide].finAcked && c.f[peerSide].finAcked)) {
		c.closed, c.closedAt = true, d.Time
	}
}

// advance runs the stack endpoint's state machine, RFC 9293 section 3.10, on
// a segment that side s sent. The stack's own segments move it when it sends
// them; the peer's when they arrive, acknowledgment first, then SYN, then FIN,
// as section 3.10.7.4 processes them.
func (c *conn) advance(s int, syn, ack, fin, rst bool, ackn uint32) {
	st := c.state
	if rst {
		c.state = stClosed
		return
	}
	if s == stackSide {
		switch {
		case syn && !ack && (st == stUnknown || st == stClosed):
			st = stSynSent // active open
		case syn && ack && (st == stUnknown || st == stListen || st == stSynSent):
			st = stSynRcvd
		}
		if fin {
			switch st {
			case stEstablished, stSynRcvd:
				st = stFinWait1
			case stCloseWait:
				st = stLastAck
			}
		}
		c.state = st
		return
	}
	stack := &c.f[stackSide]
	acksOurSYN := !stack.syn || seqAfter(ackn, stack.base)
	switch {
	case syn && !ack && (st == stUnknown || st == stClosed):
		st = stListen // a passive open: the stack was listening
	case syn && !ack && st == stSynSent:
		st = stSynRcvd // simultaneous open
	case syn && ack && (st == stUnknown || st == stSynSent) && acksOurSYN:
		st = stEstablished
	case ack && !syn:
		if st == stSynRcvd && acksOurSYN {
			st = stEstablished
		}
		if stack.fin && !seqBefore(ackn, stack.finEnd) {
			switch st {
			case stFinWait1:
				st = stFinWait2
			case stClosing:
				st = stTimeWait
			case stLastAck:
				st = stClosed
			}
		}
	}
	if fin {
		switch st {
		case stEstablished, stSynRcvd:
			st = stCloseWait
		case stFinWait1:
			st = stClosing
		case stFinWait2:
			st = stTimeWait
		}
	}
	c.state = st
}

// peekTCP makes the sequence numbers of a segment that must not change state
// (a bad checksum, a fragment) relative, when its connection is known.
func (t *Tracer) peekTCP(d *Decoded) {
	key, s := keyOf(d)
	c := t.conns[key]
	if c == nil {
		d.Conn = connName(d)
		return
	}
	d.Conn = c.name
	if f := c.f[s]; f.known {
		d.Seq = d.RawSeq - f.base
	}
	if f := c.f[1-s]; f.known && header.TCPFlags(d.TCPFlags).Contains(header.TCPFlagAck) {
		d.Ack = d.RawAck - f.base
	}
	d.State = stateNames[c.state]
}

// newConn starts tracking a connection, forgetting the least recently seen
// one if there are too many.
func (t *Tracer) newConn(key connKey) *conn {
	c := &conn{key: key, client: -1, name: key.stack.String() + "-" + key.peer.String()}
	t.conns[key] = c
	c.elem = t.lru.PushFront(c)
	if len(t.conns) > maxConns {
		t.forget(t.lru.Back().Value.(*conn))
	}
	return c
}

// forget stops tracking c.
func (t *Tracer) forget(c *conn) {
	delete(t.conns, c.key)
	t.lru.Remove(c.elem)
}

// sweep forgets the connections that closed more than closedLinger ago, at
// most every sweepEvery of packet time.
func (t *Tracer) sweep(now time.Time) {
	if !t.lastSweep.IsZero() && now.Sub(t.lastSweep) < sweepEvery {
		return
	}
	t.lastSweep = now
	for _, c := range t.conns {
		if c.closed && !c.closedAt.IsZero() && now.Sub(c.closedAt) >= closedLinger {
			t.forget(c)
		}
	}
}
