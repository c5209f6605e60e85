package trace

import (
	"net/netip"
	"strings"
	"testing"
)

// TestLadder draws the example session as a ladder: the header over
// the lifelines once, then one arrow a segment, each pointing at the side
// that received it, with the phase and the stack's new state.
func TestLadder(t *testing.T) {
	c := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512))
	tr := New(Options{})
	var got []string
	for _, s := range passiveOpen(c) {
		head, line, ok := tr.LadderLine(s.p)
		if !ok {
			t.Fatal("filtered out without a filter")
		}
		if head != "" {
			got = append(got, head)
		}
		got = append(got, line)
	}
	want := []string{
		" 198.18.0.1:43512                           198.18.0.2:5000",
		"        │ ──── SYN seq=0 ────────────────────────▶ │  handshake 1/3",
		"        │ ◀─── SYN-ACK seq=0 ack=1 ─────────────── │  handshake 2/3 · SYN-RCVD",
		"        │ ──── ACK ack=1 ────────────────────────▶ │  handshake 3/3 · ESTABLISHED",
		`        │ ──── PSH-ACK 1:7 "hello\n" ────────────▶ │`,
		"        │ ◀─── ACK ack=7 ───────────────────────── │",
		`        │ ◀─── PSH-ACK 1:12 "ACK: hello\n" ─────── │`,
		"        │ ──── ACK ack=12 ───────────────────────▶ │",
		"        │ ──── FIN-ACK seq=7 ack=12 ─────────────▶ │  teardown 1/2 · CLOSE-WAIT",
		"        │ ◀─── ACK ack=8 ───────────────────────── │  teardown · CLOSE-WAIT",
		"        │ ◀─── FIN-ACK seq=12 ack=8 ────────────── │  teardown 2/2 · LAST-ACK",
		"        │ ──── ACK ack=13 ───────────────────────▶ │  teardown · CLOSED",
	}
	if g, w := strings.Join(got, "\n"), strings.Join(want, "\n"); g != w {
		t.Errorf("ladder:\n%s\nwant:\n%s", g, w)
	}
}

// TestLadderDrops draws a packet fault injection dropped as an arrow that
// stops short of its receiver's lifeline, and starts a new header when
// another conversation's packet comes.
func TestLadderDrops(t *testing.T) {
	c := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512))
	tr := New(Options{})
	steps := passiveOpen(c)
	lost := steps[0].p
	lost.Drop = "loss"
	_, in, _ := tr.LadderLine(lost)
	if !strings.Contains(in, "SYN seq=0 ──") || !strings.HasSuffix(in, "▶ ✗ │  handshake 1/3 · dropped: loss") {
		t.Errorf("inbound drop: %q", in)
	}
	out := steps[1].p
	out.Drop = "loss"
	_, line, _ := tr.LadderLine(out)
	if !strings.Contains(line, "│ ✗ ◀── SYN-ACK seq=0 ack=1 ") || !strings.Contains(line, "dropped: loss") {
		t.Errorf("outbound drop: %q", line)
	}
	d := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 40000))
	head, _, _ := tr.LadderLine(d.in(syn, ci, 0, 64240, nil, ""))
	if !strings.Contains(head, "198.18.0.1:40000") {
		t.Errorf("a new conversation got header %q", head)
	}
}

func TestLabels(t *testing.T) {
	c := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512))
	tr := New(Options{})
	for _, s := range passiveOpen(c)[:3] {
		tr.Decode(s.p)
	}
	long := tr.Decode(c.in(psh|ack, ci+1, si+1, 502, nil, strings.Repeat("x", 40)))
	if got := long.Label(); got != `PSH-ACK 1:41 "xxxxxxxxxxxxxxxx"…` {
		t.Errorf("long payload: %q", got)
	}
	ping := tr.Decode(c.packet(0, echo(peer4, stack4, false, 7, 1, "abc")))
	if got := ping.Label(); !strings.HasPrefix(got, "ICMP echo request") {
		t.Errorf("ping: %q", got)
	}
	if p, s := New(Options{}).Decode(passiveOpen(c)[0].p).Phase(); p != "handshake" || s != "1/3" {
		t.Errorf("phase of a SYN: %q %q", p, s)
	}
}
