package stack

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ustack/ustack/stack/tap"
)

// TestTapsProbeAndSnapshot runs a transfer between two stacks and checks what
// the link tap, the TCP probe and Snapshot report about it.
func TestTapsProbeAndSnapshot(t *testing.T) {
	da, db := newPipe(8, 1500)
	a, err := New(da, Config{Addrs: []netip.Prefix{v4A}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(db, Config{Addrs: []netip.Prefix{v4B}, MTU: 1500, TCPProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Link().Packets().Active() {
		t.Fatal("the packet bus is active with nobody subscribed")
	}
	packets := b.Link().Packets().Subscribe(1<<16, 64)
	samples := b.Samples().Subscribe(1<<16, 0)

	serveEcho(t, b, netip.AddrPortFrom(v4B.Addr(), 5000))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", "198.18.0.2:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	payload := randomBytes(7, 256<<10)
	go c.Write(payload)
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo: %v", err)
	}

	snap := b.Snapshot()
	if snap.TCP.PassiveOpens != 1 || snap.TCP.Established != 1 {
		t.Errorf("tcp counters %+v: want one passive open, one established", snap.TCP)
	}
	if snap.Link.RxPackets == 0 || snap.Link.RxIPv4Packets != snap.Link.RxPackets || snap.Link.TxIPv4Bytes != snap.Link.TxBytes {
		t.Errorf("link counters %+v: want packets, all of them IPv4", snap.Link)
	}
	if snap.IPv4.PacketsReceived == 0 || snap.IPv4.PacketsSent == 0 {
		t.Errorf("ipv4 counters %+v", snap.IPv4)
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	var row *ConnInfo
	for i := range snap.Conns {
		if snap.Conns[i].Remote == local {
			row = &snap.Conns[i]
		}
	}
	switch {
	case row == nil:
		t.Fatalf("no connection row for %v in %+v", local, snap.Conns)
	case row.State != "ESTABLISHED" || row.Cwnd == 0 || row.SRTT == 0 || row.SegmentsIn == 0 || row.RecvBuf == 0:
		t.Errorf("connection row %+v", *row)
	case row.BytesAcked == nil || *row.BytesAcked < uint64(len(payload))-1<<16:
		t.Errorf("bytes acked %v, want about %d (the probe is on)", row.BytesAcked, len(payload))
	}

	// The first packet the link saw is the client's SYN, inbound.
	first := <-packets.C()
	ip := header.IPv4(first.Data)
	if first.Dir != tap.In || len(first.Data) != 60 && first.Len < 40 || header.TCP(ip.Payload()).Flags() != header.TCPFlagSyn {
		t.Errorf("first packet: %v %d bytes, want the inbound SYN", first.Dir, first.Len)
	}
	if first.Len > 64 && len(first.Data) != 64 {
		t.Errorf("snap length 64: got %d bytes of %d", len(first.Data), first.Len)
	}
	outs := 0
	for len(packets.C()) > 0 {
		if p := <-packets.C(); p.Dir == tap.Out {
			outs++
		}
	}
	if outs == 0 || packets.Dropped() != 0 {
		t.Errorf("%d outbound packets seen, %d dropped", outs, packets.Dropped())
	}

	// The server sent 256 KiB back: its congestion window grew.
	n, firstCwnd, maxCwnd := 0, 0, 0
	for len(samples.C()) > 0 {
		s := <-samples.C()
		if s.Remote != local {
			continue
		}
		if n == 0 {
			firstCwnd = s.Cwnd
		}
		n++
		maxCwnd = max(maxCwnd, s.Cwnd)
		if s.Local != netip.AddrPortFrom(v4B.Addr(), 5000) || s.MSS == 0 {
			t.Fatalf("sample %+v", s)
		}
	}
	if n < 10 || maxCwnd <= firstCwnd {
		t.Errorf("%d probe samples, cwnd %d at first, at most %d: want it to grow", n, firstCwnd, maxCwnd)
	}
	packets.Close()
	samples.Close()
	if b.Link().Packets().Active() {
		t.Error("the packet bus is still active after its subscriber left")
	}
}

func TestLinkCountsPerTransportProtocol(t *testing.T) {
	a, b, c := echoPair(t, 8, Config{}, 10*time.Second)
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	c.Close()
	u, err := a.DialUDP("udp", "198.18.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("to a closed port: ICMP port unreachable comes back"))
	u.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := b.Snapshot().Link
		if l.Rx.TCP.Packets >= 3 && l.Tx.TCP.Packets >= 2 && l.Rx.UDP.Packets == 1 && l.Tx.ICMP.Packets == 1 {
			if l.Rx.TCP.Bytes < 3*40 || l.Rx.UDP.Bytes != 20+8+50 || l.Rx.TCP.Packets+l.Rx.UDP.Packets+l.Rx.ICMP.Packets+l.Rx.Other.Packets != l.RxPackets {
				t.Errorf("per-protocol counters %+v / %+v do not add up to the link's %d packets", l.Rx, l.Tx, l.RxPackets)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("per-protocol counters: rx %+v tx %+v", l.Rx, l.Tx)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
