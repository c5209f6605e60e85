package webui

import (
	"strings"
	"time"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/tap"
	"github.com/ustack/ustack/stack/trace"
)

// ring keeps the last Keep encoded events of one kind, oldest first, and
// counts what it trimmed.
type ring struct {
	ev      [][]byte
	bytes   int
	trimmed uint64
}

// add keeps msg, trimming the oldest event when Keep are kept, and returns
// how many bytes the ring grew by (negative when it shrank).
func (r *ring) add(msg []byte) int {
	before := r.bytes
	if len(r.ev) == Keep {
		r.trim(1)
	}
	r.ev = append(r.ev, msg)
	r.bytes += len(msg)
	return r.bytes - before
}

// trim forgets the n oldest events.
func (r *ring) trim(n int) {
	n = min(n, len(r.ev))
	for _, m := range r.ev[:n] {
		r.bytes -= len(m)
	}
	// Copy down rather than reslice, so that the array does not grow
	// forever under appends; let go of what moved.
	old := len(r.ev)
	r.ev = r.ev[:copy(r.ev, r.ev[n:])]
	clear(r.ev[len(r.ev):old])
	r.trimmed += uint64(n)
}

// connHist is what the UI remembers of one connection: its recent events, and
// what the table shows of it.
type connHist struct {
	key, proto    string
	local, remote string
	first, last   time.Time
	client        string // "peer" or "stack": who sent the first SYN
	packets       ring
	samples       ring
	bytesIn       uint64 // payload that crossed the link, retransmissions left out
	bytesOut      uint64
	segsIn        uint64
	segsOut       uint64
	retrans       uint64 // retransmissions seen on the link
	state         string // the trace's replay of the stack's state
	listed        bool   // netstack listed it once
	live          bool   // netstack lists it now
	closedAt      time.Time
	lastInfo      stack.ConnInfo
	lastSample    *stack.TCPSample // the probe's last word on it
}

func newConnHist(key, proto string, now time.Time) *connHist {
	c := &connHist{key: key, proto: proto, first: now, last: now}
	// The key is "local-remote", "udp:" first for UDP; neither side holds a
	// '-' (IPv6 addresses are in brackets, and have none).
	c.local, c.remote, _ = strings.Cut(strings.TrimPrefix(key, udpPrefix), "-")
	return c
}

// packet counts one packet of the connection and keeps its event; it returns
// how many bytes the kept events grew by.
func (c *connHist) packet(d *trace.Decoded, msg []byte) (grew int) {
	grew = c.packets.add(msg)
	if !d.Time.IsZero() {
		c.last = d.Time
	}
	if lostIn(d) {
		return grew // the stack never got it: nothing changed
	}
	if d.State != "" {
		c.state = d.State // the stack sent it, whether it arrived or not
	}
	if d.FaultDrop != "" {
		return grew // it never crossed
	}
	if d.Flags == "SYN" && c.client == "" {
		c.client = "peer"
		if d.Dir == tap.Out {
			c.client = "stack"
		}
	}
	if d.Retransmission {
		c.retrans++
	}
	if d.Dir == tap.Out {
		c.segsOut++
		if !d.Retransmission {
			c.bytesOut += uint64(d.PayloadLen)
		}
	} else {
		c.segsIn++
		if !d.Retransmission {
			c.bytesIn += uint64(d.PayloadLen)
		}
	}
	return grew
}

// ended tells whether the connection is over: a SYN on its 4-tuple starts
// another.
func (c *connHist) ended() bool {
	return !c.closedAt.IsZero() || c.state == "CLOSED" || c.state == "TIME-WAIT"
}

// lostIn tells whether fault injection dropped d on its way in: the stack
// never got it. (One dropped on its way out was sent.)
func lostIn(d *trace.Decoded) bool { return d.FaultDrop != "" && d.Dir == tap.In }

// update decides whether the connection is still open, from netstack's
// listing (ci, nil when netstack no longer has it) and the wire.
func (c *connHist) update(ci *stack.ConnInfo, now time.Time) {
	c.live = ci != nil
	if !c.closedAt.IsZero() && ci == nil {
		return
	}
	switch {
	case ci != nil:
		c.listed, c.lastInfo, c.closedAt = true, *ci, time.Time{}
	case c.proto == "UDP":
		if now.Sub(c.last) > udpIdle {
			c.closedAt = now
		}
	case c.listed || c.state == "CLOSED" || now.Sub(c.last) > gone:
		c.closedAt = now
	}
}

// row is the connection's line of the table.
func (c *connHist) row(ci *stack.ConnInfo, since func(time.Time) float64) connRow {
	r := connRow{
		Conn: c.key, Local: c.local, Remote: c.remote, Proto: c.proto,
		State: c.state, Open: c.closedAt.IsZero(), Client: c.client,
		Retrans: c.retrans, BytesIn: c.bytesIn, BytesOut: c.bytesOut,
		SegsIn: c.segsIn, SegsOut: c.segsOut,
		Kept: len(c.packets.ev), Trimmed: c.packets.trimmed,
	}
	info := ci
	if info == nil && c.listed {
		info = &c.lastInfo // the last values netstack gave
	}
	switch {
	case info != nil:
		r.Cwnd, r.Ssthresh, r.SRTT, r.RTO = info.Cwnd, info.Ssthresh, ms(info.SRTT), ms(info.RTO)
		r.Retrans, r.Timeouts = max(r.Retrans, info.Retransmits), info.Timeouts
	case c.lastSample != nil:
		// Closed before netstack was asked for it: what the probe saw last.
		x := c.lastSample
		r.Cwnd, r.Ssthresh, r.SRTT, r.RTO = uint32(x.Cwnd), uint32(min(x.Ssthresh, 1<<31)), ms(x.SRTT), ms(x.RTO)
	}
	if ci != nil {
		r.State = ci.State // netstack's own state, while it has the connection
	}
	if !r.Open {
		at := since(c.closedAt)
		r.ClosedAt = &at
		if c.proto == "TCP" {
			r.State = "CLOSED"
		}
	}
	return r
}
