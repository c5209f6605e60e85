package webui

import (
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
	// forever under appends.
	r.ev = r.ev[:copy(r.ev, r.ev[n:])]
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
	closedAt      time.Time
	lastInfo      stack.ConnInfo
	lastSample    *stack.TCPSample // the probe's last word on it
}

func newConnHist(key, proto string, now time.Time) *connHist {
	c := &connHist{key: key, proto: proto, first: now, last: now}
	for i := 0; i < len(key); i++ {
		// The key is "local-remote"; neither side contains a '-' (IPv6
		// addresses are in brackets, and have none).
		if key[i] == '-' {
			c.local, c.remote = key[:i], key[i+1:]
			break
		}
	}
	return c
}

// packet counts one packet of the connection and keeps its event; it returns
// how many bytes the kept events grew by.
func (c *connHist) packet(d *trace.Decoded, msg []byte) (grew int) {
	grew = c.packets.add(msg)
	if !d.Time.IsZero() {
		c.last = d.Time
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
	if d.State != "" {
		c.state = d.State
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
	if c.state != "CLOSED" {
		c.closedAt = time.Time{} // a new connection on the same 4-tuple
	}
	return grew
}

// update decides whether the connection is still open, from netstack's
// listing (ci, nil when netstack no longer has it) and the wire.
func (c *connHist) update(ci *stack.ConnInfo, now time.Time) {
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
