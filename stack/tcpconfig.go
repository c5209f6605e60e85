package stack

import (
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Congestion control algorithms netstack implements.
const (
	Reno  = "reno"  // RFC 5681: halve cwnd on loss, grow it by one segment per RTT
	Cubic = "cubic" // RFC 9438: grow cwnd as a cubic function of the time since the last loss
)

// BufRange is the minimum, default and maximum size of a TCP buffer, in bytes.
type BufRange struct{ Min, Default, Max int }

// TCPConfig is the TCP knobs of the userspace stack. The zero value is
// DefaultTCPConfig.
type TCPConfig struct {
	// CC is the congestion control algorithm, Reno or Cubic; "" is Reno.
	CC string
	// NoSACK turns selective acknowledgements (RFC 2018) off.
	NoSACK bool
	// NoRACK turns RACK-TLP loss detection (RFC 8985) off: losses are then
	// detected by three duplicate ACKs (RFC 5681) and the retransmission
	// timer only.
	NoRACK bool
	// Nagle turns on Nagle's algorithm (RFC 896): small writes wait while
	// data is unacknowledged, to be sent together.
	Nagle bool
	// MSS caps the maximum segment size the stack advertises in its SYN:
	// what the peer may send it. netstack's own segments follow the peer's
	// MSS and the path MTU; it has no cap of its own on them (unlike
	// Linux's TCP_MAXSEG). 0: the link MTU minus the IP and TCP headers.
	MSS int
	// RcvBuf and SndBuf are the receive and send buffer sizes; zero fields
	// take the defaults: receive {4096, 65535, 65535} (no window scaling:
	// see the Known limits in the README), send netstack's {4096, 1 MiB,
	// 4 MiB}.
	RcvBuf, SndBuf BufRange
	// ModerateRcvBuf lets netstack grow the receive buffer with the
	// measured bandwidth-delay product, up to RcvBuf.Max.
	ModerateRcvBuf bool
	// Keepalive, when positive, makes every connection probe a silent peer
	// after this long, every Keepalive, nine times before giving up.
	Keepalive time.Duration
}

// DefaultRcvBuf is the receive buffer range: at most 64 KiB, so TCP needs no
// window scaling (the reason is in configure).
var DefaultRcvBuf = BufRange{Min: tcp.MinBufferSize, Default: maxUnscaledWindow, Max: maxUnscaledWindow}

// DefaultSndBuf is netstack's own send buffer range.
var DefaultSndBuf = BufRange{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcp.MaxBufferSize}

// maxBuffer bounds what a buffer flag may ask for.
const maxBuffer = 1 << 30

// withDefaults fills in the zero fields.
func (c TCPConfig) withDefaults() TCPConfig {
	if c.CC == "" {
		// Reno, not CUBIC as in Linux: netstack's CUBIC leaves slow start
		// early on a fast local link (HyStart sees delay in RTT samples of
		// netstack's millisecond granularity: ssthresh 57 segments in a
		// download through the TUN), where Reno slow-starts to the first
		// loss — 20–26 Gbit/s against 13–15 in the same runs. With losses
		// the two do alike (scripts/loss-lab.sh).
		c.CC = Reno
	}
	c.RcvBuf = c.RcvBuf.or(DefaultRcvBuf)
	c.SndBuf = c.SndBuf.or(DefaultSndBuf)
	return c
}

func (r BufRange) or(def BufRange) BufRange {
	if r == (BufRange{}) {
		return def
	}
	return r
}

// Validate checks the knobs against the link MTU.
func (c TCPConfig) Validate(mtu int) error {
	c = c.withDefaults()
	if c.CC != Reno && c.CC != Cubic {
		return fmt.Errorf("stack: congestion control %q: want %s or %s", c.CC, Reno, Cubic)
	}
	if c.MSS != 0 {
		maxMSS := mtu - header.IPv4MinimumSize - header.TCPMinimumSize
		if c.MSS < header.TCPMinimumMSS || c.MSS > maxMSS {
			return fmt.Errorf("stack: MSS %d is outside %d..%d (the MTU %d minus 40 bytes of IPv4 and TCP headers)", c.MSS, header.TCPMinimumMSS, maxMSS, mtu)
		}
	}
	for _, b := range []struct {
		name string
		r    BufRange
	}{{"receive", c.RcvBuf}, {"send", c.SndBuf}} {
		r := b.r
		if r.Min < tcp.MinBufferSize || r.Min > r.Default || r.Default > r.Max || r.Max > maxBuffer {
			return fmt.Errorf("stack: TCP %s buffer %d,%d,%d: want %d <= min <= default <= max <= %d", b.name, r.Min, r.Default, r.Max, tcp.MinBufferSize, maxBuffer)
		}
	}
	if c.Keepalive < 0 {
		return fmt.Errorf("stack: keepalive %v is negative", c.Keepalive)
	}
	return nil
}

// apply sets the stack-wide TCP options.
func (c TCPConfig) apply(s *Stack) error {
	c = c.withDefaults()
	set := func(what string, opt tcpip.SettableTransportProtocolOption) error {
		if tcpipErr := s.ns.SetTransportProtocolOption(tcp.ProtocolNumber, opt); tcpipErr != nil {
			return fmt.Errorf("stack: set TCP %s: %s", what, tcpipErr)
		}
		return nil
	}
	sack := tcpip.TCPSACKEnabled(!c.NoSACK)
	recovery := tcpip.TCPRecovery(0)
	if !c.NoRACK {
		recovery = tcpip.TCPRACKLossDetection
	}
	nagle := tcpip.TCPDelayEnabled(c.Nagle)
	cc := tcpip.CongestionControlOption(c.CC)
	moderate := tcpip.TCPModerateReceiveBufferOption(c.ModerateRcvBuf)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: c.RcvBuf.Min, Default: c.RcvBuf.Default, Max: c.RcvBuf.Max}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: c.SndBuf.Min, Default: c.SndBuf.Default, Max: c.SndBuf.Max}
	for _, o := range []struct {
		what string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"SACK", &sack}, {"loss recovery", &recovery}, {"Nagle", &nagle}, {"congestion control", &cc},
		{"receive buffer moderation", &moderate}, {"receive buffer sizes", &rcv}, {"send buffer sizes", &snd},
	} {
		if err := set(o.what, o.opt); err != nil {
			return err
		}
	}
	s.tcp = c
	return nil
}

// applyToEndpoint sets the per-connection knobs that netstack has no
// stack-wide option for.
func (s *Stack) applyToEndpoint(ep tcpip.Endpoint) {
	if s.tcp.MSS > 0 {
		ep.SetSockOptInt(tcpip.MaxSegOption, s.tcp.MSS)
	}
	if k := s.tcp.Keepalive; k > 0 {
		idle, interval := tcpip.KeepaliveIdleOption(k), tcpip.KeepaliveIntervalOption(k)
		ep.SetSockOpt(&idle)
		ep.SetSockOpt(&interval)
		ep.SocketOptions().SetKeepAlive(true)
	}
}

// String says what the knobs are, for the ready line and logs.
func (c TCPConfig) String() string {
	c = c.withDefaults()
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	s := fmt.Sprintf("cc %s · sack %s · rack %s · nagle %s", c.CC, onOff(!c.NoSACK), onOff(!c.NoRACK), onOff(c.Nagle))
	if c.MSS > 0 {
		s += fmt.Sprintf(" · mss %d", c.MSS)
	}
	if c.RcvBuf != DefaultRcvBuf {
		s += fmt.Sprintf(" · rcvbuf %d,%d,%d", c.RcvBuf.Min, c.RcvBuf.Default, c.RcvBuf.Max)
	}
	if c.SndBuf != DefaultSndBuf {
		s += fmt.Sprintf(" · sndbuf %d,%d,%d", c.SndBuf.Min, c.SndBuf.Default, c.SndBuf.Max)
	}
	if c.ModerateRcvBuf {
		s += " · moderate-rcvbuf on"
	}
	if c.Keepalive > 0 {
		s += fmt.Sprintf(" · keepalive %v", c.Keepalive)
	}
	return s
}

// TCP returns the stack's TCP knobs, defaults filled in.
func (s *Stack) TCP() TCPConfig { return s.tcp }
