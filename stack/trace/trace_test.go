package trace

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ustack/ustack/stack/tap"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Initial sequence numbers: the client's and the server's.
const (
	ci = 1000000
	si = 3000000000 // past 2**31, so relative numbers must wrap right
)

// passiveOpen is the example, whole: the kernel's client connects to
// the stack's server, says hello, gets its ACK line, and closes first.
func passiveOpen(c *conv) []step {
	return []step{
		{c.in(syn, ci, 0, 64240, linuxSYNOptions(1), ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 60 | TCP 43512 → 5000 SYN seq 0 win 64240 mss 1460 sack-ok wscale 7 ts   [handshake 1/3: Client → SYN → Server]"},
		{c.out(syn|ack, si, ci+1, 65535, mssOption(1460), ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 44 | TCP 5000 → 43512 SYN-ACK seq 0 ack 1 win 65535 mss 1460   [handshake 2/3: Server → SYN-ACK → Client] state SYN-RCVD"},
		{c.in(ack, ci+1, si+1, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 1 win 502   [handshake 3/3: Client → ACK → Server] state ESTABLISHED"},
		{c.in(psh|ack, ci+1, si+1, 502, nil, "hello\n"),
			`→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 46 | TCP 43512 → 5000 PSH-ACK seq 1:7 ack 1 win 502 (6 bytes) "hello\n"   [data]`},
		{c.out(ack, si+1, ci+7, 65529, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 7 win 65529   [acknowledges 6 bytes]"},
		{c.out(psh|ack, si+1, ci+7, 65529, nil, "ACK: hello\n"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 51 | TCP 5000 → 43512 PSH-ACK seq 1:12 ack 7 win 65529 (11 bytes) "ACK: hello\n"   [data]`},
		{c.in(ack, ci+7, si+12, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 12 win 502   [acknowledges 11 bytes]"},
		{c.in(fin|ack, ci+7, si+12, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 FIN-ACK seq 7 ack 12 win 502   [teardown 1/2: Client → FIN → Server] state CLOSE-WAIT"},
		{c.out(ack, si+12, ci+8, 65528, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 8 win 65528   [teardown: FIN acknowledged] state CLOSE-WAIT"},
		{c.out(fin|ack, si+12, ci+8, 65528, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 FIN-ACK seq 12 ack 8 win 65528   [teardown 2/2: Server → FIN → Client] state LAST-ACK"},
		{c.in(ack, ci+8, si+13, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 13 win 502   [teardown: FIN acknowledged] state CLOSED"},
	}
}

// activeOpen has the stack dial out: it is the client, and it closes first.
func activeOpen(c *conv) []step {
	return []step{
		{c.out(syn, si, 0, 65535, mssOption(1460), ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 44 | TCP 5000 → 43512 SYN seq 0 win 65535 mss 1460   [handshake 1/3: Client → SYN → Server] state SYN-SENT"},
		{c.in(syn|ack, ci, si+1, 65160, linuxSYNOptions(9), ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 60 | TCP 43512 → 5000 SYN-ACK seq 0 ack 1 win 65160 mss 1460 sack-ok wscale 7 ts   [handshake 2/3: Server → SYN-ACK → Client] state ESTABLISHED"},
		{c.out(ack, si+1, ci+1, 65535, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 1 win 65535   [handshake 3/3: Client → ACK → Server] state ESTABLISHED"},
		{c.out(psh|ack, si+1, ci+1, 65535, nil, "hello\n"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 46 | TCP 5000 → 43512 PSH-ACK seq 1:7 ack 1 win 65535 (6 bytes) "hello\n"   [data]`},
		{c.in(psh|ack, ci+1, si+7, 509, nil, "ACK: hello\n"),
			`→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 51 | TCP 43512 → 5000 PSH-ACK seq 1:12 ack 7 win 509 (11 bytes) "ACK: hello\n"   [data]`},
		{c.out(ack, si+7, ci+12, 65524, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 12 win 65524   [acknowledges 11 bytes]"},
		{c.out(fin|ack, si+7, ci+12, 65524, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 FIN-ACK seq 7 ack 12 win 65524   [teardown 1/2: Client → FIN → Server] state FIN-WAIT-1"},
		{c.in(ack, ci+12, si+8, 509, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 8 win 509   [teardown: FIN acknowledged] state FIN-WAIT-2"},
		{c.in(fin|ack, ci+12, si+8, 509, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 FIN-ACK seq 12 ack 8 win 509   [teardown 2/2: Server → FIN → Client] state TIME-WAIT"},
		{c.out(ack, si+8, ci+13, 65524, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 13 win 65524   [teardown: FIN acknowledged] state TIME-WAIT"},
	}
}

func TestConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps func(*conv) []step
	}{{"passive open", passiveOpen}, {"active open", activeOpen}} {
		for _, v6 := range []bool{false, true} {
			name := tc.name + "/IPv4"
			stack, peer := netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)
			if v6 {
				name = tc.name + "/IPv6"
				stack, peer = netip.AddrPortFrom(stack6, 5000), netip.AddrPortFrom(peer6, 43512)
			}
			t.Run(name, func(t *testing.T) {
				steps := tc.steps(newConv(stack, peer))
				if v6 {
					for i := range steps {
						steps[i].want = to6(steps[i].want)
					}
				}
				runSteps(t, New(Options{}), steps)
			})
		}
	}
}

// TestDecodeFields checks the structured result on the example's data
// segment and on the stack's ACK of it.
func TestDecodeFields(t *testing.T) {
	c := newConv(netip.AddrPortFrom(stack6, 5000), netip.AddrPortFrom(peer6, 43512))
	tr := New(Options{})
	steps := passiveOpen(c)
	for _, s := range steps[:3] {
		tr.Decode(s.p)
	}
	d := tr.Decode(steps[3].p)
	if d.Network != "IPv6" || d.Src != peer6 || d.Dst != stack6 || d.TTL != 64 || d.IPLen != 66 || d.Len != 66 {
		t.Errorf("network: %s %s → %s ttl %d iplen %d len %d", d.Network, d.Src, d.Dst, d.TTL, d.IPLen, d.Len)
	}
	if d.Transport != "TCP" || d.SrcPort != 43512 || d.DstPort != 5000 || d.Flags != "PSH-ACK" {
		t.Errorf("transport: %s %d → %d %s", d.Transport, d.SrcPort, d.DstPort, d.Flags)
	}
	if d.Seq != 1 || d.Ack != 1 || d.RawSeq != ci+1 || d.RawAck != si+1 || d.Window != 502 || d.PayloadLen != 6 || string(d.Payload) != "hello\n" {
		t.Errorf("segment: seq %d ack %d raw %d/%d win %d payload %d %q", d.Seq, d.Ack, d.RawSeq, d.RawAck, d.Window, d.PayloadLen, d.Payload)
	}
	if d.Conn != "[fd75::2]:5000-[fd75::1]:43512" || d.State != "ESTABLISHED" || d.ShowState || d.Retransmission || d.ChecksumVerdict != ChecksumGood {
		t.Errorf("connection: %q state %q shown %t retrans %t checksum %s", d.Conn, d.State, d.ShowState, d.Retransmission, d.ChecksumVerdict)
	}
	if d.Malformed != "" || d.Cut != "" || len(d.Annotations) != 1 || d.Annotations[0] != "data" {
		t.Errorf("malformed %q cut %q annotations %q", d.Malformed, d.Cut, d.Annotations)
	}
	if got, want := d.String(), to6(steps[3].want); got != want {
		t.Errorf("String:\n got: %s\nwant: %s", got, want)
	}
}

// TestClosings covers the other ways out of ESTABLISHED: the peer's FIN
// acknowledging the stack's (straight to TIME-WAIT), a simultaneous close
// (CLOSING), and resets either way.
func TestClosings(t *testing.T) {
	stack, peer := netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)
	open := func(tr *Tracer, c *conv) {
		for _, s := range passiveOpen(c)[:3] {
			tr.Line(s.p)
		}
	}
	t.Run("three-way close", func(t *testing.T) {
		c, tr := newConv(stack, peer), New(Options{})
		open(tr, c)
		runSteps(t, tr, []step{
			{c.out(fin|ack, si+1, ci+1, 65535, nil, ""),
				"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 FIN-ACK seq 1 ack 1 win 65535   [teardown 1/2: Server → FIN → Client] state FIN-WAIT-1"},
			{c.in(fin|ack, ci+1, si+2, 502, nil, ""),
				"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 FIN-ACK seq 1 ack 2 win 502   [teardown 2/2: Client → FIN → Server] state TIME-WAIT"},
			{c.out(ack, si+2, ci+2, 65535, nil, ""),
				"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 2 win 65535   [teardown: FIN acknowledged] state TIME-WAIT"},
		})
	})
	t.Run("simultaneous close", func(t *testing.T) {
		c, tr := newConv(stack, peer), New(Options{})
		open(tr, c)
		runSteps(t, tr, []step{
			{c.out(fin|ack, si+1, ci+1, 65535, nil, ""),
				"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 FIN-ACK seq 1 ack 1 win 65535   [teardown 1/2: Server → FIN → Client] state FIN-WAIT-1"},
			{c.in(fin|ack, ci+1, si+1, 502, nil, ""),
				"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 FIN-ACK seq 1 ack 1 win 502   [teardown 2/2: Client → FIN → Server] state CLOSING"},
			{c.in(ack, ci+2, si+2, 502, nil, ""),
				"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 2 win 502   [teardown: FIN acknowledged] state TIME-WAIT"},
		})
	})
	t.Run("reset from the peer", func(t *testing.T) {
		c, tr := newConv(stack, peer), New(Options{})
		open(tr, c)
		runSteps(t, tr, []step{
			{c.in(rst|ack, ci+1, si+1, 0, nil, ""),
				"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 RST-ACK seq 1 ack 1 win 0   [reset] state CLOSED"},
		})
	})
	t.Run("reset from the stack, then a new connection", func(t *testing.T) {
		c, tr := newConv(stack, peer), New(Options{})
		runSteps(t, tr, []step{
			{c.in(syn, ci, 0, 64240, nil, ""),
				"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 SYN seq 0 win 64240   [handshake 1/3: Client → SYN → Server]"},
			// Nobody listens: netstack answers RST-ACK, sequence 0.
			{c.out(rst|ack, 0, ci+1, 0, nil, ""),
				"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 RST-ACK seq 0 ack 1 win 0   [reset] state CLOSED"},
			{c.in(syn, ci+5000, 0, 64240, nil, ""),
				"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 SYN seq 0 win 64240   [handshake 1/3: Client → SYN → Server]"},
		})
	})
}

func TestRetransmission(t *testing.T) {
	c, tr := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)), New(Options{})
	runSteps(t, tr, []step{
		{c.in(syn, ci, 0, 64240, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 SYN seq 0 win 64240   [handshake 1/3: Client → SYN → Server]"},
		{c.in(syn, ci, 0, 64240, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 SYN seq 0 win 64240   [handshake 1/3: Client → SYN → Server, retransmission]"},
		{c.out(syn|ack, si, ci+1, 65535, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 SYN-ACK seq 0 ack 1 win 65535   [handshake 2/3: Server → SYN-ACK → Client] state SYN-RCVD"},
		{c.in(ack, ci+1, si+1, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 1 win 502   [handshake 3/3: Client → ACK → Server] state ESTABLISHED"},
		{c.out(psh|ack, si+1, ci+1, 65535, nil, "0123456789"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 50 | TCP 5000 → 43512 PSH-ACK seq 1:11 ack 1 win 65535 (10 bytes) "0123456789"   [data]`},
		{c.out(psh|ack, si+1, ci+1, 65535, nil, "0123456789"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 50 | TCP 5000 → 43512 PSH-ACK seq 1:11 ack 1 win 65535 (10 bytes) "0123456789"   [retransmission]`},
		// Resent with more data after it: new data, not a retransmission.
		{c.out(psh|ack, si+1, ci+1, 65535, nil, "0123456789abc"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 53 | TCP 5000 → 43512 PSH-ACK seq 1:14 ack 1 win 65535 (13 bytes) "0123456789abc"   [data]`},
		{c.in(ack, ci+1, si+14, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 14 win 502   [acknowledges 13 bytes]"},
		// A keep-alive repeats the last byte's sequence number.
		{c.in(ack, ci, si+14, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 14 win 502   [keep-alive]"},
	})
	// The probe recorder's question: which outbound segments were resent.
	c, tr = newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)), New(Options{})
	var resent []bool
	for _, p := range []tap.Packet{
		c.out(syn, si, 0, 65535, nil, ""),
		c.out(syn, si, 0, 65535, nil, ""),
		c.in(syn|ack, ci, si+1, 64240, nil, ""),
		c.out(ack, si+1, ci+1, 65535, nil, ""),
		c.out(psh|ack, si+1, ci+1, 65535, nil, "x"),
		c.out(psh|ack, si+1, ci+1, 65535, nil, "x"),
	} {
		d := tr.Decode(p)
		if d.Dir == tap.Out {
			resent = append(resent, d.Retransmission)
		}
	}
	if want := []bool{false, true, false, false, true}; fmt.Sprint(resent) != fmt.Sprint(want) {
		t.Errorf("retransmissions out: %v, want %v", resent, want)
	}
}

func TestFlowControl(t *testing.T) {
	c, tr := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)), New(Options{})
	for _, s := range passiveOpen(c)[:4] {
		tr.Line(s.p)
	}
	runSteps(t, tr, []step{
		// The stack's application does not read: the window closes.
		{c.out(ack, si+1, ci+7, 0, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 7 win 0   [acknowledges 6 bytes, flow control: zero window]"},
		{c.out(ack, si+1, ci+7, 65535, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 7 win 65535   [flow control: window update]"},
		// The same ACK again, nothing outstanding: no annotation at all.
		{c.out(ack, si+1, ci+7, 65535, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 7 win 65535"},
	})
	d := tr.Decode(c.out(ack, si+1, ci+7, 0, nil, ""))
	if !d.ZeroWindow {
		t.Error("ZeroWindow not set on a zero window")
	}
}

func TestDuplicateACK(t *testing.T) {
	c, tr := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)), New(Options{})
	for _, s := range passiveOpen(c)[:3] {
		tr.Line(s.p)
	}
	// The peer acknowledges up to si+11, then SACKs si+21..si+31: the
	// segment si+11..si+21 was lost.
	sack := make([]byte, 12)
	header.EncodeNOP(sack)
	header.EncodeNOP(sack[1:])
	header.EncodeSACKBlocks([]header.SACKBlock{{Start: si + 21, End: si + 31}}, sack[2:])
	runSteps(t, tr, []step{
		{c.out(ack, si+1, ci+1, 65535, nil, "0123456789"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 50 | TCP 5000 → 43512 ACK seq 1:11 ack 1 win 65535 (10 bytes) "0123456789"   [data]`},
		{c.out(ack, si+11, ci+1, 65535, nil, "abcdefghij"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 50 | TCP 5000 → 43512 ACK seq 11:21 ack 1 win 65535 (10 bytes) "abcdefghij"   [data]`},
		{c.out(ack, si+21, ci+1, 65535, nil, "ABCDEFGHIJ"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 50 | TCP 5000 → 43512 ACK seq 21:31 ack 1 win 65535 (10 bytes) "ABCDEFGHIJ"   [data]`},
		{c.in(ack, ci+1, si+11, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 11 win 502   [acknowledges 10 bytes]"},
		{c.in(ack, ci+1, si+11, 502, sack, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 52 | TCP 43512 → 5000 ACK ack 11 win 502 sack 21:31   [duplicate ACK]"},
		{c.out(ack, si+11, ci+1, 65535, nil, "abcdefghij"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 50 | TCP 5000 → 43512 ACK seq 11:21 ack 1 win 65535 (10 bytes) "abcdefghij"   [retransmission]`},
		{c.in(ack, ci+1, si+31, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 31 win 502   [acknowledges 20 bytes]"},
	})
}

func TestMidStream(t *testing.T) {
	c, tr := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)), New(Options{})
	runSteps(t, tr, []step{
		{c.in(psh|ack, 77777, 88888, 502, nil, "hello\n"),
			`→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 46 | TCP 43512 → 5000 PSH-ACK seq 0:6 ack 0 win 502 (6 bytes) "hello\n"   [mid-stream, data]`},
		{c.out(ack, 88888, 77777+6, 65529, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 6 win 65529   [acknowledges 6 bytes]"},
		{c.out(psh|ack, 88888, 77777+6, 65529, nil, "ACK: hello\n"),
			`← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 51 | TCP 5000 → 43512 PSH-ACK seq 0:11 ack 6 win 65529 (11 bytes) "ACK: hello\n"   [data]`},
		{c.in(fin|ack, 77777+6, 88888+11, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 FIN-ACK seq 6 ack 11 win 502   [teardown 1/2: Peer → FIN → Stack] state CLOSE-WAIT"},
	})
	// A SYN-ACK whose SYN was missed is no mid-stream: the roles are known.
	c, tr = newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)), New(Options{})
	runSteps(t, tr, []step{
		{c.out(syn|ack, si, ci+1, 65535, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 SYN-ACK seq 0 ack 1 win 65535   [handshake 2/3: Server → SYN-ACK → Client] state SYN-RCVD"},
		{c.in(ack, ci+1, si+1, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 1 win 502   [handshake 3/3: Client → ACK → Server] state ESTABLISHED"},
	})
}

func TestICMP(t *testing.T) {
	payload := strings.Repeat("x", 56)
	udp := udpPacket(netip.AddrPortFrom(peer4, 5353), netip.AddrPortFrom(stack4, 5000), "hello\n")
	udp6 := udpPacket(netip.AddrPortFrom(peer6, 5353), netip.AddrPortFrom(stack6, 5000), "hello\n")
	ns := append(make([]byte, 4), stack6.AsSlice()...)
	na := append([]byte{0x60, 0, 0, 0}, stack6.AsSlice()...)
	for _, tc := range []struct {
		dir  tap.Dir
		data []byte
		want string
	}{
		{tap.In, echo(peer4, stack4, false, 7, 1, payload),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 84 | ICMP echo request id 7 seq 1 (56 bytes)"},
		{tap.Out, echo(stack4, peer4, true, 7, 1, payload),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 84 | ICMP echo reply id 7 seq 1 (56 bytes)"},
		{tap.In, echo(peer6, stack6, false, 7, 1, payload),
			"→ in   IPv6 fd75::1 → fd75::2 hlim 64 len 104 | ICMPv6 echo request id 7 seq 1 (56 bytes)"},
		{tap.Out, echo(stack6, peer6, true, 7, 1, payload),
			"← out  IPv6 fd75::2 → fd75::1 hlim 64 len 104 | ICMPv6 echo reply id 7 seq 1 (56 bytes)"},
		{tap.Out, icmpv4Packet(stack4, peer4, header.ICMPv4DstUnreachable, header.ICMPv4PortUnreachable, [4]byte{}, udp[:28]),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 56 | ICMP destination unreachable (port unreachable) for UDP 198.18.0.1:5353 → 198.18.0.2:5000"},
		{tap.In, icmpv4Packet(peer4, stack4, header.ICMPv4DstUnreachable, header.ICMPv4FragmentationNeeded, [4]byte{0, 0, 0x05, 0x78}, udp[:28]),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 56 | ICMP destination unreachable (fragmentation needed mtu 1400) for UDP 198.18.0.1:5353 → 198.18.0.2:5000"},
		{tap.In, icmpv4Packet(peer4, stack4, header.ICMPv4TimeExceeded, header.ICMPv4TTLExceeded, [4]byte{}, udp[:20]),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 48 | ICMP time exceeded (ttl exceeded in transit) for UDP 198.18.0.1 → 198.18.0.2"},
		{tap.In, icmpv6Packet(peer6, stack6, header.ICMPv6PacketTooBig, 0, append([]byte{0, 0, 0x05, 0x00}, udp6[:48]...)),
			"→ in   IPv6 fd75::1 → fd75::2 hlim 64 len 96 | ICMPv6 packet too big mtu 1280 for UDP [fd75::1]:5353 → [fd75::2]:5000"},
		{tap.Out, icmpv6Packet(stack6, peer6, header.ICMPv6DstUnreachable, header.ICMPv6PortUnreachable, append(make([]byte, 4), udp6[:48]...)),
			"← out  IPv6 fd75::2 → fd75::1 hlim 64 len 96 | ICMPv6 destination unreachable (port unreachable) for UDP [fd75::1]:5353 → [fd75::2]:5000"},
		{tap.Out, icmpv6Packet(stack6, peer6, header.ICMPv6NeighborSolicit, 0, ns),
			"← out  IPv6 fd75::2 → fd75::1 hlim 64 len 64 | ICMPv6 neighbor solicitation who has fd75::2"},
		{tap.In, icmpv6Packet(peer6, stack6, header.ICMPv6NeighborAdvert, 0, na),
			"→ in   IPv6 fd75::1 → fd75::2 hlim 64 len 64 | ICMPv6 neighbor advertisement fd75::2 (solicited, override)"},
		{tap.Out, icmpv6Packet(stack6, peer6, header.ICMPv6RouterSolicit, 0, make([]byte, 4)),
			"← out  IPv6 fd75::2 → fd75::1 hlim 64 len 48 | ICMPv6 router solicitation"},
		{tap.Out, icmpv6Packet(stack6, peer6, 200, 3, make([]byte, 4)),
			"← out  IPv6 fd75::2 → fd75::1 hlim 64 len 48 | ICMPv6 type 200 code 3"},
	} {
		got, _ := New(Options{}).Line(tap.Packet{Dir: tc.dir, Data: tc.data, Len: len(tc.data)})
		if got != tc.want {
			t.Errorf("\n got: %s\nwant: %s", got, tc.want)
		}
	}
}

func TestUDP(t *testing.T) {
	tr := New(Options{})
	in := udpPacket(netip.AddrPortFrom(peer4, 5353), netip.AddrPortFrom(stack4, 5000), "hello\n")
	out := udpPacket(netip.AddrPortFrom(stack6, 5000), netip.AddrPortFrom(peer6, 5353), strings.Repeat("ab", 20))
	for _, tc := range []struct {
		p    tap.Packet
		want string
	}{
		{tap.Packet{Dir: tap.In, Data: in, Len: len(in)},
			`→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 34 | UDP 5353 → 5000 len 14 (6 bytes) "hello\n"`},
		{tap.Packet{Dir: tap.Out, Data: out, Len: len(out)},
			`← out  IPv6 fd75::2 → fd75::1 hlim 64 len 88 | UDP 5000 → 5353 len 48 (40 bytes) "abababababababababababababababab"…`},
		// Cut by the capture: the preview shows what there is.
		{tap.Packet{Dir: tap.In, Data: in[:30], Len: len(in)},
			`→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 34 | UDP 5353 → 5000 len 14 (6 bytes) "he"…`},
	} {
		got, _ := tr.Line(tc.p)
		if got != tc.want {
			t.Errorf("\n got: %s\nwant: %s", got, tc.want)
		}
	}
	if d := tr.Decode(tap.Packet{Dir: tap.In, Data: in, Len: len(in)}); d.Conn != "198.18.0.2:5000-198.18.0.1:5353" || d.ChecksumVerdict != ChecksumGood {
		t.Errorf("conn %q checksum %s", d.Conn, d.ChecksumVerdict)
	}
}

// TestBadChecksums: a segment the receiver would drop is shown, flagged, and
// changes nothing: the good copy after it is data, not a retransmission.
func TestBadChecksums(t *testing.T) {
	c := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512))
	tr := New(Options{})
	for _, s := range passiveOpen(c)[:3] {
		tr.Line(s.p)
	}
	badIP := c.in(psh|ack, ci+1, si+1, 502, nil, "hello\n")
	badIP.Data[10] ^= 0xff // the IPv4 header checksum
	badTCP := c.in(psh|ack, ci+1, si+1, 502, nil, "hello\n")
	badTCP.Data[len(badTCP.Data)-2]++ // "hello\n" → "hellp\n"
	good := c.in(psh|ack, ci+1, si+1, 502, nil, "hello\n")
	runSteps(t, tr, []step{
		{badIP, `→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 46 | TCP 43512 → 5000 PSH-ACK seq 1:7 ack 1 win 502 (6 bytes) "hello\n"   [bad IPv4 header checksum]`},
		{badTCP, `→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 46 | TCP 43512 → 5000 PSH-ACK seq 1:7 ack 1 win 502 (6 bytes) "hellp\n"   [bad TCP checksum]`},
		{good, `→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 46 | TCP 43512 → 5000 PSH-ACK seq 1:7 ack 1 win 502 (6 bytes) "hello\n"   [data]`},
	})
	udp := udpPacket(netip.AddrPortFrom(peer4, 5353), netip.AddrPortFrom(stack4, 5000), "hello\n")
	udp[len(udp)-1] = 'X'
	ping := echo(peer6, stack6, false, 1, 2, "abcd")
	ping[len(ping)-1] = 'X'
	for _, tc := range []struct {
		data []byte
		want string
	}{
		{udp, `→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 34 | UDP 5353 → 5000 len 14 (6 bytes) "helloX"   [bad UDP checksum]`},
		{ping, `→ in   IPv6 fd75::1 → fd75::2 hlim 64 len 52 | ICMPv6 echo request id 1 seq 2 (4 bytes)   [bad ICMPv6 checksum]`},
	} {
		if got, _ := tr.Line(tap.Packet{Data: tc.data, Len: len(tc.data)}); got != tc.want {
			t.Errorf("\n got: %s\nwant: %s", got, tc.want)
		}
	}
}

// TestTruncated cuts a valid SYN at every length, on the wire (malformed)
// and in the capture only (cut), and checks the tracer says so and never
// panics.
func TestTruncated(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		src, dst := netip.AddrPortFrom(peer4, 43512), netip.AddrPortFrom(stack4, 5000)
		if v6 {
			src, dst = netip.AddrPortFrom(peer6, 43512), netip.AddrPortFrom(stack6, 5000)
		}
		full := tcpPacket(src, dst, syn, ci, 0, 64240, linuxSYNOptions(1), "")
		hdr := header.IPv4MinimumSize
		if v6 {
			hdr = header.IPv6MinimumSize
		}
		for n := 0; n < len(full); n++ {
			tr := New(Options{Verbose: n%2 == 0})
			short := full[:n]
			got, _ := tr.Line(tap.Packet{Data: short, Len: n})
			if !strings.Contains(got, "malformed") {
				t.Errorf("%d of %d bytes on the wire: %q does not say malformed", n, len(full), got)
			}
			switch {
			case n == 0:
				if want := "→ in   malformed IP: empty packet"; !strings.HasSuffix(got, want) {
					t.Errorf("got %q, want it to end in %q", got, want)
				}
			case n < hdr:
				want := fmt.Sprintf("truncated (%d of %d header bytes)", n, hdr)
				if !strings.HasSuffix(got, want) {
					t.Errorf("got %q, want it to end in %q", got, want)
				}
			}
			got, _ = tr.Line(tap.Packet{Data: short, Len: len(full)})
			if !strings.Contains(got, "captured") || strings.Contains(got, "malformed") {
				t.Errorf("%d of %d bytes captured: %q does not say so", n, len(full), got)
			}
		}
	}
	got, _ := New(Options{}).Line(tap.Packet{Data: []byte{0x45, 0, 0, 60, 0, 0, 0, 0, 64, 6, 0, 0}, Len: 12})
	if want := "→ in   malformed IPv4: truncated (12 of 20 header bytes)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestMalformed covers the length fields that disagree with the data.
func TestMalformed(t *testing.T) {
	// resum makes the IPv4 header checksum right again after an edit, so
	// that a case is about one fault.
	resum := func(b []byte) []byte {
		ip := header.IPv4(b)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return b
	}
	stack, peer := netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)
	seg := func() []byte { return tcpPacket(peer, stack, ack, ci, si, 502, nil, "hi") }
	udp := func() []byte { return udpPacket(peer, stack, "hi") }
	for _, tc := range []struct {
		name string
		edit func() []byte
		want string
	}{
		{"unknown version", func() []byte { b := seg(); b[0] = 0x55; return b },
			"→ in   malformed IP: unknown version 5"},
		{"IHL below 5", func() []byte { b := seg(); b[0] = 0x44; return b },
			"→ in   malformed IPv4: bad header length 16 bytes (IHL 4, at least 5)"},
		{"IHL past the data", func() []byte { b := seg(); b[0] = 0x4f; return b },
			"→ in   malformed IPv4: truncated (42 of 60 header bytes)"},
		{"total length too long", func() []byte { b := seg(); b[3] = 100; return resum(b) },
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 100 | malformed IPv4: total length 100, but the packet is 42 bytes"},
		{"total length short of the header", func() []byte { b := seg(); b[2], b[3] = 0, 10; return resum(b) },
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 10 | malformed IPv4: total length 10 is less than the header length 20"},
		{"TCP data offset below 20", func() []byte { b := seg(); b[20+12] = 0x40; return b },
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 42 | malformed TCP: data offset 16 bytes is less than 20"},
		{"TCP data offset past the segment", func() []byte { b := seg(); b[20+12] = 0xf0; return b },
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 42 | malformed TCP: data offset 60 bytes, but the segment is 22 bytes"},
		{"UDP length", func() []byte { b := udp(); b[20+5] = 20; return b },
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 30 | malformed UDP: length 20, but the IP payload is 10 bytes"},
		{"IPv6 payload length", func() []byte {
			b := tcpPacket(netip.AddrPortFrom(peer6, 1), netip.AddrPortFrom(stack6, 2), ack, 1, 1, 1, nil, "")
			b[5] = 99
			return b
		}, "→ in   IPv6 fd75::1 → fd75::2 hlim 64 len 139 | malformed IPv6: payload length 99, but 20 bytes follow the header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit()
			got, _ := New(Options{}).Line(tap.Packet{Data: b, Len: len(b)})
			if got != tc.want {
				t.Errorf("\n got: %s\nwant: %s", got, tc.want)
			}
		})
	}
}

func TestFragments(t *testing.T) {
	// An IPv4 UDP datagram of 1008 bytes in two fragments.
	payload := strings.Repeat("0123456789abcdef", 63)
	whole := udpPacket(netip.AddrPortFrom(peer4, 5353), netip.AddrPortFrom(stack4, 5000), payload)
	frag := func(off, n int, more bool) []byte {
		b := make([]byte, header.IPv4MinimumSize+n)
		copy(b, whole[:header.IPv4MinimumSize])
		copy(b[header.IPv4MinimumSize:], whole[header.IPv4MinimumSize+off:][:n])
		ip := header.IPv4(b)
		flags := uint8(0)
		if more {
			flags = header.IPv4FlagMoreFragments
		}
		ip.SetFlagsFragmentOffset(flags, uint16(off))
		ip.SetTotalLength(uint16(len(b)))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return b
	}
	first, second := frag(0, 504, true), frag(504, 1016-504, false)
	// The same datagram over IPv6, with a fragment header.
	v6 := func(off uint16, more bool, body []byte) []byte {
		b := make([]byte, header.IPv6MinimumSize+header.IPv6FragmentHeaderSize+len(body))
		header.IPv6(b).Encode(&header.IPv6Fields{
			PayloadLength: uint16(len(b) - header.IPv6MinimumSize), TransportProtocol: header.UDPProtocolNumber, HopLimit: 64,
			SrcAddr: addr(peer6), DstAddr: addr(stack6),
			ExtensionHeaders: header.IPv6ExtHdrSerializer{&header.IPv6SerializableFragmentExtHdr{FragmentOffset: off / 8, M: more, Identification: 7}},
		})
		copy(b[header.IPv6MinimumSize+header.IPv6FragmentHeaderSize:], body)
		return b
	}
	first6, second6 := v6(0, true, whole[20:20+504]), v6(504, false, whole[20+504:])
	for _, tc := range []struct {
		data []byte
		want string
	}{
		{first, `→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 524 more-frags | UDP 5353 → 5000 len 1016 (1008 bytes) "0123456789abcdef0123456789abcdef"…`},
		{second, "→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 532 frag off 504 | UDP fragment (512 bytes)"},
		{first6, `→ in   IPv6 fd75::1 → fd75::2 hlim 64 len 552 fragment off 0 more-frags | UDP 5353 → 5000 len 1016 (1008 bytes) "0123456789abcdef0123456789abcdef"…`},
		{second6, "→ in   IPv6 fd75::1 → fd75::2 hlim 64 len 560 fragment off 504 | UDP fragment (512 bytes)"},
	} {
		got, _ := New(Options{}).Line(tap.Packet{Data: tc.data, Len: len(tc.data)})
		if got != tc.want {
			t.Errorf("\n got: %s\nwant: %s", got, tc.want)
		}
	}
}

func TestVerbose(t *testing.T) {
	c := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512))
	tr := New(Options{Verbose: true})
	steps := passiveOpen(c)
	runSteps(t, tr, []step{
		{steps[0].p, "+0.000000s " + steps[0].want + `
    IPv4 tos 0x00 id 7238 flags DF frag-off 0 ttl 64 proto 6 (TCP) checksum 0x924e ok ihl 20
    TCP seq 1000000 ack 0 data-offset 40 flags SYN window 64240 checksum 0xc116 ok urgent 0
    TCP options: mss 1460, sack-permitted, ts val 1 ecr 0, nop, wscale 7`},
		{steps[1].p, "+0.001000s " + steps[1].want + `
    IPv4 tos 0x00 id 7238 flags DF frag-off 0 ttl 64 proto 6 (TCP) checksum 0x925e ok ihl 20
    TCP seq 3000000000 ack 1000001 data-offset 24 flags SYN-ACK window 65535 checksum 0xfb4c ok urgent 0
    TCP options: mss 1460`},
		{steps[2].p, "+0.002000s " + steps[2].want + `
    IPv4 tos 0x00 id 7238 flags DF frag-off 0 ttl 64 proto 6 (TCP) checksum 0x9262 ok ihl 20
    TCP seq 1000001 ack 3000000001 data-offset 20 flags ACK window 502 checksum 0x1114 ok urgent 0`},
		{steps[3].p, "+0.003000s " + steps[3].want + `
    IPv4 tos 0x00 id 7238 flags DF frag-off 0 ttl 64 proto 6 (TCP) checksum 0x925c ok ihl 20
    TCP seq 1000001 ack 3000000001 data-offset 20 flags PSH-ACK window 502 checksum 0xcd29 ok urgent 0
    payload, first 6 of 6 bytes:
      0000  68 65 6c 6c 6f 0a                                 |hello.|`},
	})
	ping := echo(peer6, stack6, false, 7, 1, "ping")
	got, _ := tr.Line(tap.Packet{Time: c.now.Add(time.Second), Data: ping, Len: len(ping)})
	want := `+1.010000s → in   IPv6 fd75::1 → fd75::2 hlim 64 len 52 | ICMPv6 echo request id 7 seq 1 (4 bytes)
    IPv6 tclass 0x00 flow-label 0x00000 next-header 58 (ICMPv6) hop-limit 64 payload-len 12
    ICMPv6 type 128 code 0 checksum 0xa5f1 ok
    payload, first 4 of 4 bytes:
      0000  70 69 6e 67                                       |ping|`
	if got != want {
		t.Errorf("\n got: %s\nwant: %s", got, want)
	}
}

// TestFilterKeepsState: the filter hides the stack's packets, yet the
// peer's lines still count from the stack's ISN.
func TestFilterKeepsState(t *testing.T) {
	f, err := ParseFilter("tcp and src host 198.18.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tr := New(Options{Filter: f})
	for _, s := range passiveOpen(newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512))) {
		got, ok := tr.Line(s.p)
		switch {
		case s.p.Dir == tap.Out && ok:
			t.Errorf("the filter let through %q", got)
		case s.p.Dir == tap.In && got != s.want:
			t.Errorf("\n got: %s\nwant: %s", got, s.want)
		}
	}
}

// TestBounded: no more than maxConns connections are tracked, and a closed
// one is forgotten closedLinger later.
func TestBounded(t *testing.T) {
	tr := New(Options{})
	stack := netip.AddrPortFrom(stack4, 5000)
	for i := range maxConns + 10 {
		c := newConv(stack, netip.AddrPortFrom(peer4, uint16(10000+i)))
		tr.Decode(c.in(syn, ci, 0, 64240, nil, ""))
	}
	if len(tr.conns) != maxConns || tr.lru.Len() != maxConns {
		t.Fatalf("%d connections tracked (%d in the LRU list), want %d", len(tr.conns), tr.lru.Len(), maxConns)
	}
	// The oldest went first.
	c := newConv(stack, netip.AddrPortFrom(peer4, 10000))
	if d := tr.Decode(c.in(ack, ci+1, si+1, 502, nil, "")); !d.MidStream {
		t.Errorf("the oldest connection is still tracked: %v", d.Annotations)
	}

	tr = New(Options{})
	c = newConv(stack, netip.AddrPortFrom(peer4, 43512))
	for _, s := range passiveOpen(c) {
		tr.Line(s.p)
	}
	if len(tr.conns) != 1 || !tr.conns[connKey{stack, netip.AddrPortFrom(peer4, 43512)}].closed {
		t.Fatalf("the closed connection: %d tracked", len(tr.conns))
	}
	other := newConv(stack, netip.AddrPortFrom(peer4, 1))
	other.now = c.now.Add(closedLinger)
	tr.Line(other.in(syn, 1, 0, 1, nil, ""))
	if len(tr.conns) != 1 {
		t.Errorf("%d connections tracked a minute after one closed, want only the new one", len(tr.conns))
	}
}

// TestDirOther: a direction that is neither In nor Out reads as In.
func TestDirOther(t *testing.T) {
	b := echo(peer4, stack4, false, 1, 1, "")
	got, _ := New(Options{}).Line(tap.Packet{Dir: 7, Data: b, Len: len(b)})
	if !strings.HasPrefix(got, "→ in   IPv4") {
		t.Errorf("got %q", got)
	}
}

func BenchmarkLine(b *testing.B) {
	c := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512))
	tr := New(Options{})
	steps := passiveOpen(c)
	for _, s := range steps[:3] {
		tr.Line(s.p)
	}
	p := steps[3].p
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tr.Line(p); !ok {
			b.Fatal("filtered out")
		}
	}
}

func TestOptionList(t *testing.T) {
	for _, tc := range []struct {
		opts []byte
		want string
	}{
		{linuxSYNOptions(7), "mss 1460, sack-permitted, ts val 7 ecr 0, nop, wscale 7"},
		{[]byte{1, 1, 5, 10, 0, 0, 0, 21, 0, 0, 0, 31}, "nop, nop, sack 21-31"},
		{[]byte{30, 4, 0, 0, 0, 0, 0, 0}, "unknown kind 30 len 4, eol (then 3 bytes of padding)"},
		{[]byte{2, 4, 5, 180, 0}, "mss 1460, eol"},
		{[]byte{2, 1, 0, 0}, "bad option kind 2 len 1"},
		{[]byte{1, 1, 1, 8}, "nop, nop, nop, truncated option kind 8"},
		{[]byte{3, 9, 0, 0}, "bad option kind 3 len 9"},
	} {
		if got := string(appendOptionList(nil, tc.opts)); got != tc.want {
			t.Errorf("% x:\n got: %s\nwant: %s", tc.opts, got, tc.want)
		}
	}
}

// TestFaultInjectionMarks: packets fault injection dropped are shown as such;
// one lost on the way in never reached the stack and changes its state in
// nothing, but its resend is a retransmission.
func TestFaultInjectionMarks(t *testing.T) {
	c, tr := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)), New(Options{})
	lost := func(p tap.Packet, why string) tap.Packet { p.Drop = why; return p }
	noted := func(p tap.Packet, note string) tap.Packet { p.Note = note; return p }
	runSteps(t, tr, []step{
		{c.in(syn, ci, 0, 64240, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 SYN seq 0 win 64240   [handshake 1/3: Client → SYN → Server]"},
		{c.out(syn|ack, si, ci+1, 65535, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 SYN-ACK seq 0 ack 1 win 65535   [handshake 2/3: Server → SYN-ACK → Client] state SYN-RCVD"},
		{c.in(ack, ci+1, si+1, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 1 win 502   [handshake 3/3: Client → ACK → Server] state ESTABLISHED"},
		{lost(c.in(fin|ack, ci+1, si+1, 502, nil, ""), "loss"),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 FIN-ACK seq 1 ack 1 win 502   [teardown 1/2: Client → FIN → Server]   ✗ dropped by fault injection: loss"},
		{c.in(fin|ack, ci+1, si+1, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 FIN-ACK seq 1 ack 1 win 502   [teardown 1/2: Client → FIN → Server, retransmission] state CLOSE-WAIT"},
		{noted(c.out(ack, si+1, ci+2, 65535, nil, ""), "delayed 20ms"),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 ACK ack 2 win 65535   [teardown: FIN acknowledged] state CLOSE-WAIT   ⚡ fault injection: delayed 20ms"},
	})
}

// TestSuperpacketMark: a TCP superpacket that crossed the TUN whole is one
// line, marked with the segments it stands for, as tcpdump shows a packet an
// offloading NIC has yet to cut.
func TestSuperpacketMark(t *testing.T) {
	c, tr := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512)), New(Options{})
	tso := func(p tap.Packet, n, size int) tap.Packet { p.Segments, p.SegmentSize = n, size; return p }
	data := strings.Repeat("x", 4000)
	runSteps(t, tr, []step{
		{c.in(syn, ci, 0, 64240, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 SYN seq 0 win 64240   [handshake 1/3: Client → SYN → Server]"},
		{c.out(syn|ack, si, ci+1, 65535, nil, ""),
			"← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 40 | TCP 5000 → 43512 SYN-ACK seq 0 ack 1 win 65535   [handshake 2/3: Server → SYN-ACK → Client] state SYN-RCVD"},
		{c.in(ack, ci+1, si+1, 502, nil, ""),
			"→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 40 | TCP 43512 → 5000 ACK ack 1 win 502   [handshake 3/3: Client → ACK → Server] state ESTABLISHED"},
		{tso(c.in(ack, ci+1, si+1, 502, nil, data), 3, 1448),
			`→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 4040 | TCP 43512 → 5000 ACK seq 1:4001 ack 1 win 502 (4000 bytes) "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"…   [data]   TSO 3×1448`},
	})
}
