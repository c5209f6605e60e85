package stack

import (
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TCPSample is a TCP connection's sender state right after netstack handled a
// segment of it: what netstack's TCP probe (tcp.TCPProbeFunc) sees, cut down
// to what a learner plots (RFC 5681 congestion control, RFC 6298 timers).
type TCPSample struct {
	Time           time.Time
	Local, Remote  netip.AddrPort // the userspace stack's side is Local
	Cwnd, Ssthresh int            // congestion window and slow-start threshold, in segments
	MSS            int            // bytes of payload per segment
	SRTT, RTTVar   time.Duration
	RTO            time.Duration
	InFlight       int    // segments sent, not yet acknowledged
	SackedOut      int    // of those, segments the peer selectively acknowledged
	SndWnd         int    // the peer's receive window, bytes
	SndUna, SndNxt uint32 // absolute sequence numbers
	FastRecovery   bool   // in fast recovery (RFC 6582)
}

// maxProbeConns bounds how many connections probeState remembers; Snapshot
// forgets the closed ones.
const maxProbeConns = 4096

// probeState keeps, per connection, the first and last SND.UNA the probe saw,
// for the bytes-acknowledged column of the connection table.
type probeState struct {
	mu    sync.Mutex
	acked map[[2]netip.AddrPort][2]uint32 // guarded by mu
}

// onProbe runs on netstack's TCP goroutine, with the endpoint locked, after
// every segment it handled: it must be quick and must never block.
func (s *Stack) onProbe(st *tcp.TCPEndpointState) {
	snd := &st.Sender
	sample := TCPSample{
		Time:         time.Now(),
		Local:        netip.AddrPortFrom(addrFrom(st.ID.LocalAddress), st.ID.LocalPort),
		Remote:       netip.AddrPortFrom(addrFrom(st.ID.RemoteAddress), st.ID.RemotePort),
		Cwnd:         snd.SndCwnd,
		Ssthresh:     snd.Ssthresh,
		MSS:          snd.MaxPayloadSize,
		SRTT:         snd.RTTState.SRTT,
		RTTVar:       snd.RTTState.RTTVar,
		RTO:          snd.RTO,
		InFlight:     snd.Outstanding,
		SackedOut:    snd.SackedOut,
		SndWnd:       int(snd.SndWnd),
		SndUna:       uint32(snd.SndUna),
		SndNxt:       uint32(snd.SndNxt),
		FastRecovery: snd.FastRecovery.Active,
	}
	key := [2]netip.AddrPort{sample.Local, sample.Remote}
	s.probe.mu.Lock()
	seen, ok := s.probe.acked[key]
	if !ok {
		if len(s.probe.acked) >= maxProbeConns {
			// Forget one at random: bounded memory matters more than
			// one connection's bytes-acknowledged column.
			for k := range s.probe.acked {
				delete(s.probe.acked, k)
				break
			}
		}
		seen[0] = sample.SndUna
	}
	seen[1] = sample.SndUna
	s.probe.acked[key] = seen
	s.probe.mu.Unlock()
	if s.samples.Active() {
		s.samples.Publish(sample)
	}
}

// bytesAcked returns how many bytes the peer acknowledged on a connection
// since the probe first saw it; false when the probe is off or never saw it.
func (s *Stack) bytesAcked(local, remote netip.AddrPort) (uint64, bool) {
	s.probe.mu.Lock()
	defer s.probe.mu.Unlock()
	if s.probe.acked == nil {
		return 0, false
	}
	seen, ok := s.probe.acked[[2]netip.AddrPort{local, remote}]
	return uint64(seen[1] - seen[0]), ok
}

// forgetClosed drops the probe's memory of connections netstack no longer has.
func (s *Stack) forgetClosed(live []ConnInfo) {
	s.probe.mu.Lock()
	defer s.probe.mu.Unlock()
	if len(s.probe.acked) == 0 {
		return
	}
	keep := make(map[[2]netip.AddrPort]bool, len(live))
	for _, c := range live {
		keep[[2]netip.AddrPort{c.Local, c.Remote}] = true
	}
	for k := range s.probe.acked {
		if !keep[k] {
			delete(s.probe.acked, k)
		}
	}
}
