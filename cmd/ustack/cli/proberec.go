package cli

import (
	"sync"
	"time"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/probe"
	"github.com/ustack/ustack/stack/tap"
	"github.com/ustack/ustack/stack/trace"
)

// maxProbeConns bounds how many connections the probe recorder remembers.
const maxProbeConns = 4096

// probeRecorder turns netstack's TCP probe samples into probe CSV rows, and
// adds a row for every segment the stack retransmitted, which it learns from
// the packets (the trace decoder tells a retransmission from new data).
type probeRecorder struct {
	mu     sync.Mutex
	w      *probe.Writer
	tracer *trace.Tracer
	start  time.Time
	conns  map[string]*probeConn
}

type probeConn struct {
	base        uint32 // SND.UNA of the first sample: sequence numbers are relative to it
	state       string
	retransmits uint64
	last        probe.Record
	seen        bool // last holds a sample
	inRecovery  bool // the last sample was in fast recovery
	lastUsed    time.Time
}

func newProbeRecorder(w *probe.Writer) *probeRecorder {
	return &probeRecorder{w: w, tracer: trace.New(trace.Options{}), conns: make(map[string]*probeConn)}
}

func (r *probeRecorder) conn(key string, now time.Time) *probeConn {
	if r.start.IsZero() {
		r.start = now
	}
	c := r.conns[key]
	if c == nil {
		if len(r.conns) >= maxProbeConns {
			r.evict()
		}
		c = &probeConn{}
		r.conns[key] = c
	}
	c.lastUsed = now
	return c
}

// evict forgets the connection used longest ago.
func (r *probeRecorder) evict() {
	var oldest string
	var t time.Time
	for k, c := range r.conns {
		if oldest == "" || c.lastUsed.Before(t) {
			oldest, t = k, c.lastUsed
		}
	}
	delete(r.conns, oldest)
}

func (r *probeRecorder) sample(s stack.TCPSample) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := s.Local.String() + "-" + s.Remote.String()
	c := r.conn(key, s.Time)
	if !c.seen {
		c.base = s.SndUna
	}
	// netstack's own accounting can dip below zero for a moment (seen:
	// SackedOut -2 during SACK recovery); the CSV says "none" then.
	rec := probe.Record{
		Time: s.Time.Sub(r.start), Conn: key, State: c.state,
		Cwnd: max(s.Cwnd, 0), Ssthresh: max(s.Ssthresh, 0), MSS: max(s.MSS, 0),
		SRTT: max(s.SRTT, 0), RTTVar: max(s.RTTVar, 0), RTO: max(s.RTO, 0),
		InFlight: max(s.InFlight, 0), SackedOut: max(s.SackedOut, 0), SndWnd: max(s.SndWnd, 0),
		SndUna: s.SndUna - c.base, SndNxt: s.SndNxt - c.base,
		Retransmits: c.retransmits,
	}
	switch {
	case s.FastRecovery && !c.inRecovery:
		// Marked once, when the recovery begins (RFC 6582).
		rec.Event = probe.EventFastRecovery
	case s.Cwnd == 1 && c.seen && c.last.Cwnd > 1:
		// netstack's retransmission timer collapses cwnd to one
		// segment (RFC 5681 §3.1).
		rec.Event = probe.EventRTO
	}
	c.inRecovery = s.FastRecovery
	c.last, c.seen = rec, true
	return r.w.Write(rec)
}

func (r *probeRecorder) packet(p tap.Packet) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.tracer.Decode(p)
	if d.Transport != "TCP" || d.Conn == "" {
		return nil
	}
	c := r.conn(d.Conn, p.Time)
	if d.State != "" {
		c.state = d.State
	}
	if p.Dir != tap.Out || !d.Retransmission {
		return nil
	}
	c.retransmits++
	if !c.seen {
		return nil
	}
	rec := c.last
	rec.Time, rec.State, rec.Retransmits, rec.Event = p.Time.Sub(r.start), c.state, c.retransmits, probe.EventRetransmit
	return r.w.Write(rec)
}

func (r *probeRecorder) flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.Flush()
}
