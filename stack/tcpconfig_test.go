package stack

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

func TestTCPConfigIsValidated(t *testing.T) {
	for _, tc := range []struct {
		cfg  TCPConfig
		want string
	}{
		{TCPConfig{CC: "vegas"}, `congestion control "vegas": want reno or cubic`},
		{TCPConfig{MSS: 50}, "MSS 50 is outside"},
		{TCPConfig{MSS: 1461}, "MSS 1461 is outside 88..1460 (the MTU 1500 minus 40 bytes"},
		{TCPConfig{RcvBuf: BufRange{4096, 1024, 65535}}, "TCP receive buffer 4096,1024,65535: want 4096 <= min <= default <= max"},
		{TCPConfig{SndBuf: BufRange{1, 2, 3}}, "TCP send buffer 1,2,3"},
		{TCPConfig{SndBuf: BufRange{4096, 4096, 2 << 30}}, "<= 1073741824"},
		{TCPConfig{Keepalive: -time.Second}, "keepalive -1s is negative"},
	} {
		err := Config{Addrs: []netip.Prefix{v4B}, MTU: 1500, TCP: tc.cfg}.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if err := (Config{Addrs: []netip.Prefix{v4B}, MTU: 1500, TCP: TCPConfig{CC: Reno, MSS: 1460}}).validate(); err != nil {
		t.Errorf("a good config: %v", err)
	}
}

// TestTCPKnobsReachNetstack builds stacks with knobs set and checks netstack
// and the wire show them.
func TestTCPKnobsReachNetstack(t *testing.T) {
	da, db := newPipe(8, 1500)
	w := &wire{}
	db.setOnSend(w.record(false))
	a, err := New(da, Config{Addrs: []netip.Prefix{v4A}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	knobs := TCPConfig{CC: Reno, NoSACK: true, NoRACK: true, Nagle: true, MSS: 1000, RcvBuf: BufRange{4096, 32768, 32768}, Keepalive: 100 * time.Millisecond}
	b, err := New(db, Config{Addrs: []netip.Prefix{v4B}, MTU: 1500, TCP: knobs})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var cc tcpip.CongestionControlOption
	var sack tcpip.TCPSACKEnabled
	var rec tcpip.TCPRecovery
	var rcv tcpip.TCPReceiveBufferSizeRangeOption
	b.ns.TransportProtocolOption(tcp.ProtocolNumber, &cc)
	b.ns.TransportProtocolOption(tcp.ProtocolNumber, &sack)
	b.ns.TransportProtocolOption(tcp.ProtocolNumber, &rec)
	b.ns.TransportProtocolOption(tcp.ProtocolNumber, &rcv)
	if cc != "reno" || sack || rec != 0 || rcv.Max != 32768 {
		t.Errorf("netstack options: cc %q sack %v recovery %d rcvbuf %+v", cc, sack, rec, rcv)
	}
	if got := b.TCP().String(); got != "cc reno · sack off · rack off · nagle on · mss 1000 · rcvbuf 4096,32768,32768 · keepalive 100ms" {
		t.Errorf("String: %q", got)
	}

	ln, err := b.Listen(netip.AddrPortFrom(v4B.Addr(), 7))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			_, err = io.Copy(io.Discard, c)
		}
		accepted <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", "198.18.0.2:7")
	if err != nil {
		t.Fatal(err)
	}
	// Silent for a while: b's accepted connection sends keepalive probes.
	time.Sleep(600 * time.Millisecond)
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	var synAck header.TCP
	probes := 0
	for _, seg := range tcpSegments(t, w.snapshot()) {
		if seg.Flags() == header.TCPFlagSyn|header.TCPFlagAck {
			synAck = seg
		}
		if seg.Flags() == header.TCPFlagAck && len(seg.Payload()) == 0 && synAck != nil && seg.SequenceNumber() == synAck.SequenceNumber() {
			// A keepalive probe carries SND.NXT-1: the SYN-ACK's
			// sequence number, while nothing was sent.
			probes++
		}
	}
	if synAck == nil {
		t.Fatal("no SYN-ACK on the wire")
	}
	opts := header.ParseSynOptions(synAck.Options(), true)
	if opts.MSS != 1000 || opts.SACKPermitted {
		t.Errorf("SYN-ACK options: mss %d sack-permitted %v; want 1000 and no SACK", opts.MSS, opts.SACKPermitted)
	}
	if probes < 2 {
		t.Errorf("%d keepalive probes from the accepted connection in 600ms at a 100ms keepalive", probes)
	}
}

func TestUDPBetweenStacks(t *testing.T) {
	a, b, _ := newStackPair(t, 8, 1500)
	pc, err := b.ListenUDP(netip.AddrPortFrom(v4B.Addr(), 5000))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("ACK: "), buf[:n]...), from)
		}
	}()
	c, err := a.DialUDP("udp", "198.18.0.2:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ACK: hello\n" {
		t.Fatalf("reply %q, %v", buf[:n], err)
	}
	pc.Close()
	if _, _, err := pc.ReadFrom(buf); err == nil || !strings.Contains(err.Error(), "use of closed network connection") {
		t.Errorf("ReadFrom after Close: %v, want net.ErrClosed", err)
	}
	if _, err := a.DialUDP("udp6", "198.18.0.2:5000"); err == nil {
		t.Error("udp6 to an IPv4 address dialled")
	}
}
