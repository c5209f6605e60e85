package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ustack/ustack/stack"
)

// onOff is a flag that takes on or off.
type onOff struct{ v *bool }

func (f onOff) String() string {
	if f.v == nil || !*f.v {
		return "off"
	}
	return "on"
}

func (f onOff) Set(s string) error {
	switch strings.ToLower(s) {
	case "on", "true", "yes", "1":
		*f.v = true
	case "off", "false", "no", "0":
		*f.v = false
	default:
		return fmt.Errorf("%q: want on or off", s)
	}
	return nil
}

// bufRangeFlag is a TCP buffer size flag: MIN,DEFAULT,MAX (like the kernel's
// tcp_rmem) or one size for all three.
type bufRangeFlag struct{ r *stack.BufRange }

func (f bufRangeFlag) String() string {
	if f.r == nil || *f.r == (stack.BufRange{}) {
		return ""
	}
	return fmt.Sprintf("%d,%d,%d", f.r.Min, f.r.Default, f.r.Max)
}

func (f bufRangeFlag) Set(s string) error {
	parts := strings.Split(s, ",")
	if len(parts) != 1 && len(parts) != 3 {
		return fmt.Errorf("%q: give MIN,DEFAULT,MAX (like 4096,65535,65535) or one size", s)
	}
	var v [3]int
	for i, p := range parts {
		var b byteSize
		if err := b.Set(p); err != nil {
			return err
		}
		v[i] = int(b)
	}
	if len(parts) == 1 {
		v[1], v[2] = v[0], v[0]
	}
	*f.r = stack.BufRange{Min: v[0], Default: v[1], Max: v[2]}
	return nil
}

// noDelayedACK is --delayed-ack: netstack has no such switch, and saying so is
// better than a flag that does nothing.
type noDelayedACK struct{}

func (noDelayedACK) String() string { return "" }

func (noDelayedACK) Set(string) error {
	return errors.New("netstack has no delayed-ACK timer to switch: it acknowledges once after each batch of segments it processes (gVisor's tcp/connect.go, handleSegmentsLocked), so ACKs are never held back waiting for data; --nagle switches the sender-side delay")
}

// tcpFlags are the TCP knobs of the userspace stack.
type tcpFlags struct {
	cfg        stack.TCPConfig
	sack, rack bool
}

func (t *tcpFlags) register(fs *flagSet) {
	t.sack, t.rack = true, true
	fs.StringVar(&t.cfg.CC, "cc", stack.Reno, "TCP congestion control: reno (RFC 5681: halve cwnd on a loss) or cubic (RFC 9438: regrow it on a cubic curve) (`reno|cubic`)")
	fs.Var(onOff{&t.sack}, "sack", "selective acknowledgements, RFC 2018 (`on|off`): a loss costs one retransmission, not a window")
	fs.Var(onOff{&t.rack}, "rack", "RACK-TLP loss detection, RFC 8985 (`on|off`); off: three duplicate ACKs and the retransmission timer only")
	fs.Var(onOff{&t.cfg.Nagle}, "nagle", "Nagle's algorithm, RFC 896 (`on|off`): hold small writes while data is unacknowledged")
	fs.Var(noDelayedACK{}, "delayed-ack", "not available (`on|off` is refused with the reason): netstack acknowledges after each batch of segments, with no delayed-ACK timer")
	fs.IntVar(&t.cfg.MSS, "mss", 0, "announce this TCP maximum segment size, `BYTES`, in the stack's SYNs: the largest segment the peer may send it (netstack's own segments follow the peer's MSS); 0: the MTU minus 40")
	fs.Var(bufRangeFlag{&t.cfg.RcvBuf}, "tcp-rcvbuf", "TCP receive buffer `MIN,DEFAULT,MAX` in bytes (default 4096,65535,65535: at most 64 KiB, so no window scaling; above that, see the README's Known limits)")
	fs.Var(bufRangeFlag{&t.cfg.SndBuf}, "tcp-sndbuf", "TCP send buffer `MIN,DEFAULT,MAX` in bytes (default 4096,1048576,4194304)")
	fs.Var(onOff{&t.cfg.ModerateRcvBuf}, "moderate-rcvbuf", "grow the receive buffer with the measured bandwidth-delay product, up to its max (`on|off`)")
	fs.DurationVar(&t.cfg.Keepalive, "keepalive", 0, "probe a silent peer after `DURATION`, then every DURATION, 9 times, before giving up (0: off)")
}

// config returns the knobs, checked against the link's MTU.
func (t *tcpFlags) config(mtu int) (stack.TCPConfig, error) {
	c := t.cfg
	c.NoSACK, c.NoRACK = !t.sack, !t.rack
	if c.Keepalive < 0 {
		return c, usageErrorf("--keepalive %v is negative: give a duration like 30s, or 0 for off", c.Keepalive)
	}
	if err := c.Validate(mtu); err != nil {
		msg := strings.TrimPrefix(err.Error(), "stack: ")
		switch {
		case strings.HasPrefix(msg, "congestion control"):
			msg = "--cc: " + msg
		case strings.HasPrefix(msg, "MSS"):
			msg = "--mss: " + msg + "; give a smaller --mss or 0"
		case strings.HasPrefix(msg, "TCP receive"):
			msg = "--tcp-rcvbuf: " + msg
		case strings.HasPrefix(msg, "TCP send"):
			msg = "--tcp-sndbuf: " + msg
		}
		return c, usageErrorf("%s", msg)
	}
	return c, nil
}
