// Package probe is the file format of ustack's TCP probe: one CSV row per TCP
// segment that netstack received on a connection, with the sender's
// congestion state after netstack handled it. Its neighbours: package stack
// publishes the samples of netstack's TCP probe (tcp.NewProtocolProbe);
// ustack up --tcp-probe FILE (cmd/ustack/cli) turns them into Records and
// writes them here; ustack plot reads them back and draws them, and anyone
// can load the file into a spreadsheet. The package itself only knows CSV: it
// imports neither gVisor nor the rest of ustack.
//
// # What the columns mean
//
// TCP sends no faster than the smaller of two windows. The receiver's window
// (snd_wnd, flow control) is what the peer says it has room for. The
// congestion window (cwnd, congestion control) is the sender's own guess of
// what the path between them can carry without loss; it is never sent on the
// wire. RFC 5681 defines it in bytes; netstack counts it in segments of mss
// bytes, and so does this file. inflight is how many segments are out and not
// yet acknowledged; TCP sends a new one only while inflight < cwnd.
//
//   - Slow start (RFC 5681, section 3.1): while cwnd < ssthresh, every ACK
//     of new data adds one segment to cwnd, so cwnd doubles every round trip.
//     On a plot it is the steep, exponential part.
//   - Congestion avoidance (RFC 5681, section 3.1): once cwnd ≥ ssthresh,
//     cwnd grows by about one segment per round trip: the straight, slow
//     part. (netstack's default is Reno; with CUBIC, RFC 9438, the growth
//     follows a cubic curve of the time since the last loss instead.)
//   - ssthresh, the slow-start threshold, is where slow start ends. It
//     starts "arbitrarily high" (RFC 5681, section 3.1): netstack uses the
//     largest int, 9223372036854775807, and the file keeps that value as it
//     is. A plot should read it as "unlimited: no loss seen yet".
//   - Fast retransmit and fast recovery (RFC 5681, section 3.2; RFC 6675
//     with SACK): three duplicate ACKs, or SACK blocks that show a hole, mean
//     one segment was lost while later ones arrived. The sender resends it at
//     once, sets ssthresh to half of what was in flight (at least 2) and
//     cwnd to about ssthresh: the window halves instead of collapsing. The
//     row where this starts has event fast-recovery.
//   - Retransmission timeout, RTO (RFC 6298): when no ACK comes back at all,
//     the retransmission timer fires. The sender resends the oldest segment,
//     sets ssthresh to half of what was in flight and cwnd to 1 (the "loss
//     window", RFC 5681, section 3.1, equation 4), doubles the RTO (back-off,
//     RFC 6298, section 5.5) and starts slow start again. The first row
//     after the timer fired has event rto.
//   - srtt and rttvar (RFC 6298, section 2) are the smoothed round-trip time
//     and its variation, updated from each RTT sample; rto is
//     srtt + 4·rttvar, with a floor (RFC 6298 says 1 s; netstack, like
//     Linux, uses 200 ms). srtt is 0 until the first sample.
//   - sacked_out is how many of the inflight segments the peer has already
//     acknowledged selectively (SACK, RFC 2018).
//   - snd_una is the oldest byte not yet acknowledged and snd_nxt the next
//     byte to send (RFC 9293, section 3.3.1), both counted from the first
//     snd_una seen on the connection: snd_una is the number of bytes
//     acknowledged so far, and snd_nxt − snd_una the bytes in flight.
//   - retransmits counts the segments sent again so far on the connection.
//     A row where it grew without fast-recovery or rto has event retransmit
//     (another resend during recovery, or one of RACK's, RFC 8985).
//
// Times are written in seconds with six decimals (time_s) and in
// milliseconds with three (srtt_ms, rttvar_ms, rto_ms): both to the
// microsecond, so a value rounded to the microsecond reads back exactly as it
// was written.
package probe

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Record is one row: a connection's state after netstack handled one segment.
type Record struct {
	Time  time.Duration // since the recording started
	Conn  string        // "198.18.0.2:5000-198.18.0.1:43512": the userspace stack's side first; IPv6 as "[fd75:7374:6163:6b::2]:5000-…"
	State string        // TCP state name, e.g. ESTABLISHED ("" when unknown)

	Cwnd     int // congestion window, in segments
	Ssthresh int // slow-start threshold, in segments (netstack starts it at the largest int: kept as is)
	MSS      int // bytes per segment (the sender's largest payload)

	SRTT   time.Duration // smoothed round-trip time (0 before the first sample)
	RTTVar time.Duration // round-trip time variation
	RTO    time.Duration // retransmission timeout

	InFlight  int // segments sent and not yet acknowledged (inflight_bytes, the same in bytes, is SndNxt-SndUna)
	SackedOut int // of those, segments the peer SACKed
	SndWnd    int // the peer's advertised receive window, in bytes

	SndUna uint32 // oldest unacknowledged byte, relative to the first SndUna of the connection (= bytes acknowledged so far)
	SndNxt uint32 // next byte to send, relative to the same origin

	Retransmits uint64 // retransmitted segments so far on this connection
	Event       string // "" or one of EventFastRecovery, EventRTO, EventRetransmit
}

// Events: what happened on the segment of a row, besides the usual ACK.
const (
	EventFastRecovery = "fast-recovery" // the sender entered fast recovery: ssthresh and cwnd were cut about in half
	EventRTO          = "rto"           // the retransmission timer fired: cwnd went back to 1
	EventRetransmit   = "retransmit"    // a segment was sent again, neither of the above
)

// Header is the first line of the file: the column names, in order.
const Header = "time_s,conn,state,cwnd,ssthresh,mss,srtt_ms,rttvar_ms,rto_ms,inflight,inflight_bytes,sacked_out,snd_wnd,snd_una,snd_nxt,retransmits,event"

// The columns, by index into a row and into header.
const (
	colTime = iota
	colConn
	colState
	colCwnd
	colSsthresh
	colMSS
	colSRTT
	colRTTVar
	colRTO
	colInFlight
	colInFlightBytes
	colSackedOut
	colSndWnd
	colSndUna
	colSndNxt
	colRetransmits
	colEvent
	numColumns
)

var header = strings.Split(Header, ",")

// fieldError is a value that is not allowed in a column.
type fieldError struct {
	col int
	msg string
}

func (e *fieldError) Error() string { return "column " + header[e.col] + ": " + e.msg }

// InFlightBytes is how many bytes are sent and not yet acknowledged: the
// inflight_bytes column, SND.NXT − SND.UNA.
func (r *Record) InFlightBytes() uint32 { return r.SndNxt - r.SndUna }

// check tells whether r can be written and read back: the checks the Reader
// makes on the values of a row once their syntax is right.
func (r *Record) check() *fieldError {
	if r.Conn == "" {
		return &fieldError{colConn, "the connection is empty"}
	}
	if msg := checkText(r.Conn); msg != "" {
		return &fieldError{colConn, msg}
	}
	if msg := checkText(r.State); msg != "" {
		return &fieldError{colState, msg}
	}
	switch r.Event {
	case "", EventFastRecovery, EventRTO, EventRetransmit:
	default:
		return &fieldError{colEvent, fmt.Sprintf("unknown event %q: want %s, %s, %s or nothing", r.Event, EventFastRecovery, EventRTO, EventRetransmit)}
	}
	for _, c := range [...]struct {
		col int
		v   int
	}{
		{colCwnd, r.Cwnd}, {colSsthresh, r.Ssthresh}, {colMSS, r.MSS},
		{colInFlight, r.InFlight}, {colSackedOut, r.SackedOut}, {colSndWnd, r.SndWnd},
	} {
		if c.v < 0 {
			return &fieldError{c.col, fmt.Sprintf("%d is negative", c.v)}
		}
	}
	for _, c := range [...]struct {
		col int
		d   time.Duration
	}{
		{colTime, r.Time}, {colSRTT, r.SRTT}, {colRTTVar, r.RTTVar}, {colRTO, r.RTO},
	} {
		if c.d < 0 {
			return &fieldError{c.col, fmt.Sprintf("%v is negative", c.d)}
		}
	}
	return nil
}

// checkText returns what is wrong with a text column, or "". Control
// characters are refused: they have no place in a connection or state name,
// and CSV does not keep a carriage return before a newline as it was.
func checkText(s string) string {
	if !utf8.ValidString(s) {
		return fmt.Sprintf("%q is not UTF-8", s)
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return fmt.Sprintf("%q has a control character", s)
		}
	}
	return ""
}
