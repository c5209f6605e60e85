package fault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestNewRefusesBadArguments(t *testing.T) {
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New with a nil deliver function: no error")
	}
	_, err := New(Config{Loss: 2}, func(Dir, []Released) {})
	if err == nil || err.Error() != "loss must be between 0% and 100% (got 200%)" {
		t.Errorf("New with loss 200%%: %v", err)
	}
}

func TestNoFaultPassesUntouched(t *testing.T) {
	h := newHarness(t, Config{Loss: 1, Dir: In})
	if h.j.Applies(Out) || !h.j.Applies(In) || !h.j.Applies(Both) {
		t.Errorf("Applies: in %v, out %v, both %v; want true, false, true", h.j.Applies(In), h.j.Applies(Out), h.j.Applies(Both))
	}
	pkt := tcpPacket(4, 1, []byte("hello"))
	orig := bytes.Clone(pkt)
	for _, d := range []Dir{Out, 0, Both, 4} {
		if v := h.j.Decide(d, pkt); v != (Verdict{}) || !bytes.Equal(pkt, orig) {
			t.Errorf("Decide(%v) = %+v, packet changed %v; want it passed untouched", d, v, !bytes.Equal(pkt, orig))
		}
	}
	if v := h.j.Decide(In, pkt); v.Drop != DropLoss {
		t.Errorf("Decide(in) with loss 100%% = %+v", v)
	}
	if st := h.j.Stats(); st.Out != (DirStats{}) || st.In.Packets != 1 || st.In.Lost != 1 {
		t.Errorf("stats %+v; want one lost packet in, nothing out", st)
	}
}

// within reports whether got/n is within ±tol of want.
func within(got, n uint64, want, tol float64) bool {
	return math.Abs(float64(got)/float64(n)-want) <= tol
}

func TestProbabilities(t *testing.T) {
	const n = 100_000
	h := newHarness(t, Config{Loss: 0.05, Corrupt: 0.05, Duplicate: 0.05, Reorder: 0.05, Dir: Out, Seed: 1})
	pkt := tcpPacket(4, 1, make([]byte, 100))
	var lost, corrupted, dups, held uint64
	for range n {
		v := h.j.Decide(Out, pkt)
		switch {
		case v.Drop == DropLoss:
			lost++
			continue
		case v.Drop != "":
			t.Fatalf("verdict %+v", v)
		}
		if v.Note == NoteCorrupted {
			corrupted++
		}
		if v.Dup {
			dups++
		}
		if v.Held {
			held++
		}
	}
	h.advance(reorderTimeout) // the last reordered packets time out
	st := h.j.Stats().Out
	passed := n - lost
	if st.Packets != n || st.Lost != lost || st.Corrupted != corrupted || st.Duplicated != dups || st.Reordered != held || st.HeldNow != 0 {
		t.Errorf("stats %+v; want %d packets, %d lost, %d corrupted, %d duplicated, %d reordered, none held", st, n, lost, corrupted, dups, held)
	}
	for _, c := range []struct {
		name string
		got  uint64
		of   uint64
	}{{"lost", lost, n}, {"corrupted", corrupted, passed}, {"duplicated", dups, passed}, {"reordered", held, passed}} {
		if !within(c.got, c.of, 0.05, 0.01) {
			t.Errorf("%s %d of %d: %.2f%%, want 5%% ± 1%%", c.name, c.got, c.of, 100*float64(c.got)/float64(c.of))
		}
	}
	// Every reordered packet came out, a duplicated one twice.
	var heldDups uint64
	for _, d := range h.deliveries() {
		if d.dir != Out || len(d.pkt.Data) != len(pkt) {
			t.Fatalf("delivered %v %d bytes", d.dir, len(d.pkt.Data))
		}
		if bytes.HasSuffix([]byte(d.pkt.Note), []byte("duplicate")) {
			heldDups++
		}
	}
	if got := uint64(len(h.deliveries())); got != held+heldDups {
		t.Errorf("%d packets delivered; want the %d reordered and %d duplicates of them", got, held, heldDups)
	}
}

func TestCorruptionFlipsOneCheckedBit(t *testing.T) {
	headerOnly := header.IPv4(tcpPacket(4, 1, nil)[:header.IPv4MinimumSize])
	headerOnly.SetTotalLength(header.IPv4MinimumSize)
	headerOnly.SetChecksum(0)
	headerOnly.SetChecksum(^headerOnly.CalculateChecksum())
	for _, tc := range []struct {
		name    string
		version int
		pkt     []byte
		from    int // the first byte a bit may be flipped in
	}{
		{"IPv4 TCP", 4, tcpPacket(4, 1, []byte("some data to damage")), header.IPv4MinimumSize},
		{"IPv4 bare TCP header", 4, tcpPacket(4, 2, nil), header.IPv4MinimumSize},
		{"IPv6 TCP", 6, tcpPacket(6, 3, []byte("more data")), header.IPv6MinimumSize},
		{"IPv4 header only", 4, []byte(headerOnly), 0}, // from 0: the transport checksum is not there
	} {
		t.Run(tc.name, func(t *testing.T) {
			transport := tc.from > 0
			if tc.version == 4 && !ipv4HeaderOK(tc.pkt) {
				t.Fatal("the test packet's IPv4 checksum is wrong to begin with")
			}
			if transport && !tcpChecksumOK(tc.version, tc.pkt) {
				t.Fatal("the test packet's TCP checksum is wrong to begin with")
			}
			h := newHarness(t, Config{Corrupt: 1, Seed: 7})
			seen := map[int]bool{}
			for i := range 200 {
				pkt := bytes.Clone(tc.pkt)
				v := h.j.Decide(In, pkt)
				if v.Note != NoteCorrupted || v.Drop != "" || v.Held || v.Dup {
					t.Fatalf("verdict %+v; want corrupted", v)
				}
				d := diffBits(tc.pkt, pkt)
				if len(d) != 1 {
					t.Fatalf("packet %d: %d bits changed, want 1", i, len(d))
				}
				seen[d[0]] = true
				if d[0]/8 < tc.from {
					t.Fatalf("packet %d: bit %d flipped, before byte %d", i, d[0], tc.from)
				}
				if transport {
					if tcpChecksumOK(tc.version, pkt) {
						t.Fatalf("packet %d: bit %d flipped and the TCP checksum still verifies", i, d[0])
					}
				} else if ipv4HeaderOK(pkt) {
					t.Fatalf("packet %d: bit %d flipped and the IPv4 header checksum still verifies", i, d[0])
				}
			}
			if len(seen) < 20 {
				t.Errorf("200 corruptions flipped only %d different bits", len(seen))
			}
			if st := h.j.Stats().In; st.Corrupted != 200 {
				t.Errorf("%d counted corrupted, want 200", st.Corrupted)
			}
		})
	}
}

func TestCorruptRegion(t *testing.T) {
	v4 := tcpPacket(4, 1, []byte("abc"))
	v6 := tcpPacket(6, 1, []byte("abc"))
	padded := append(bytes.Clone(v4), 0, 0, 0) // bytes past Total Length
	badIHL := bytes.Clone(v4)
	badIHL[0] = 0x4f // 60 bytes of header in a 43-byte packet
	for _, tc := range []struct {
		name       string
		pkt        []byte
		start, end int
	}{
		{"empty", nil, 0, 0},
		{"IPv4", v4, 20, len(v4)},
		{"IPv4 with trailing bytes", padded, 20, len(v4)},
		{"IPv4 with an IHL past the end", badIHL, 0, len(v4)},
		{"IPv6", v6, 40, len(v6)},
		{"IPv6 fixed header only", v6[:40], 0, 40},
		{"short IPv6", v6[:30], 0, 30},
		{"not IP", []byte{0x00, 1, 2}, 0, 3},
	} {
		if s, e := corruptRegion(tc.pkt); s != tc.start || e != tc.end {
			t.Errorf("%s: region [%d, %d), want [%d, %d)", tc.name, s, e, tc.start, tc.end)
		}
	}
}

// run decides pkts, copies, in direction d and returns the verdicts and
// what became of the packets.
func run(j *Injector, d Dir, pkts [][]byte) ([]Verdict, [][]byte) {
	verdicts := make([]Verdict, len(pkts))
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		out[i] = bytes.Clone(p)
		verdicts[i] = j.Decide(d, out[i])
	}
	return verdicts, out
}

func TestDeterminism(t *testing.T) {
	cfg := Config{Loss: 0.1, Corrupt: 0.2, Duplicate: 0.1, Reorder: 0.1, Jitter: time.Millisecond, Seed: 42}
	pkts := packets(1, 2000)
	a := newHarness(t, cfg)
	b := newHarness(t, cfg)
	va, pa := run(a.j, In, pkts)
	// b sees the same inbound packets, interleaved with outbound ones: the
	// inbound decisions must not change.
	vb := make([]Verdict, len(pkts))
	pb := make([][]byte, len(pkts))
	for i, p := range pkts {
		b.j.Decide(Out, bytes.Clone(p))
		pb[i] = bytes.Clone(p)
		vb[i] = b.j.Decide(In, pb[i])
	}
	for i := range pkts {
		if va[i] != vb[i] || !bytes.Equal(pa[i], pb[i]) {
			t.Fatalf("packet %d: %+v and %+v, same bytes %v; want the same decision with the same seed", i, va[i], vb[i], bytes.Equal(pa[i], pb[i]))
		}
	}
	if sa, sb := a.j.Stats().In, b.j.Stats().In; sa != sb {
		t.Errorf("inbound stats differ: %+v and %+v", sa, sb)
	}
	cfg.Seed = 43
	c := newHarness(t, cfg)
	vc, _ := run(c.j, In, pkts)
	same := 0
	for i := range pkts {
		if va[i] == vc[i] {
			same++
		}
	}
	if same > len(pkts)*3/4 {
		t.Errorf("seeds 42 and 43 agree on %d of %d verdicts", same, len(pkts))
	}
	if a.j.Seed() != 42 {
		t.Errorf("Seed() = %d, want 42", a.j.Seed())
	}
}

func TestRandomSeed(t *testing.T) {
	h := newHarness(t, Config{Loss: 0.5})
	seed := h.j.Seed()
	if seed == 0 || h.j.Config().Seed != seed {
		t.Fatalf("Seed() = %d, Config().Seed = %d: want the same non-zero seed", seed, h.j.Config().Seed)
	}
	// The seed reported reproduces the decisions.
	pkts := packets(2, 500)
	v1, _ := run(h.j, Out, pkts)
	again := newHarness(t, Config{Loss: 0.5, Seed: seed})
	v2, _ := run(again.j, Out, pkts)
	for i := range v1 {
		if v1[i] != v2[i] {
			t.Fatalf("packet %d: %+v with the random seed, %+v with it given", i, v1[i], v2[i])
		}
	}
}

func TestDelayKeepsOrder(t *testing.T) {
	const delay = 20 * time.Millisecond
	h := newHarness(t, Config{Delay: delay})
	pkts := packets(3, 10)
	for i, p := range pkts {
		if v := h.j.Decide(In, bytes.Clone(p)); !v.Held {
			t.Fatalf("packet %d: %+v, want it held", i, v)
		}
		h.advance(time.Millisecond)
	}
	if st := h.j.Stats().In; st.Delayed != 10 || st.HeldNow != 10 {
		t.Errorf("stats %+v; want 10 delayed and held", st)
	}
	h.advance(delay - 10*time.Millisecond - time.Nanosecond)
	if got := h.deliveries(); len(got) != 0 {
		t.Fatalf("%d delivered a nanosecond before the delay was over", len(got))
	}
	for i := range pkts {
		h.advance(time.Nanosecond)
		got := h.deliveries()
		if len(got) != i+1 {
			t.Fatalf("at %v: %d delivered, want %d", i, len(got), i+1)
		}
		d := got[i]
		if want := delay + time.Duration(i)*time.Millisecond; d.after() != want || !bytes.Equal(d.pkt.Data, pkts[i]) || d.pkt.Note != "delayed 20ms" {
			t.Errorf("delivery %d: after %v, note %q, same packet %v; want packet %d after %v, delayed 20ms", i, d.after(), d.pkt.Note, bytes.Equal(d.pkt.Data, pkts[i]), i, want)
		}
		h.advance(time.Millisecond - time.Nanosecond)
	}
	if st := h.j.Stats().In; st.Delayed != 10 || st.HeldNow != 0 || st.Packets != 10 {
		t.Errorf("stats %+v; want 10 packets delayed, none held", st)
	}
}

func TestJitterStaysWithinBounds(t *testing.T) {
	for _, tc := range []struct {
		delay, jitter, lo, hi time.Duration
	}{
		{20 * time.Millisecond, 5 * time.Millisecond, 15 * time.Millisecond, 25 * time.Millisecond},
		{0, 5 * time.Millisecond, 0, 5 * time.Millisecond},
		{2 * time.Millisecond, 5 * time.Millisecond, 0, 7 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("%v±%v", tc.delay, tc.jitter), func(t *testing.T) {
			const n = 1000
			h := newHarness(t, Config{Delay: tc.delay, Jitter: tc.jitter, Seed: 5})
			pkt := tcpPacket(4, 1, nil)
			passed := 0
			for range n {
				if v := h.j.Decide(Out, pkt); !v.Held {
					passed++ // a delay of exactly 0 was drawn
				}
			}
			for elapsed := time.Duration(0); elapsed <= tc.hi; elapsed += 100 * time.Microsecond {
				h.advance(100 * time.Microsecond)
			}
			got := h.deliveries()
			if len(got)+passed != n {
				t.Fatalf("%d delivered and %d passed at once, want %d in all", len(got), passed, n)
			}
			lo, hi := got[0].after(), got[0].after()
			for _, d := range got {
				// Each came out at the first 100µs step at or after its delay.
				if d.after() < tc.lo || d.after() > tc.hi+100*time.Microsecond {
					t.Fatalf("delivered after %v, outside [%v, %v]", d.after(), tc.lo, tc.hi)
				}
				lo, hi = min(lo, d.after()), max(hi, d.after())
			}
			if span := tc.hi - tc.lo; hi-lo < span*8/10 {
				t.Errorf("delays spread over %v..%v only, want most of %v..%v", lo, hi, tc.lo, tc.hi)
			}
		})
	}
}

func TestDelayOnTheRealClock(t *testing.T) {
	const delay = 20 * time.Millisecond
	type arrival struct {
		at   time.Time
		data []byte
	}
	got := make(chan arrival, 10)
	j, err := New(Config{Delay: delay}, func(d Dir, pkts []Released) {
		for _, p := range pkts {
			got <- arrival{time.Now(), p.Data}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	pkts := packets(4, 5)
	sent := make([]time.Time, len(pkts))
	for i, p := range pkts {
		sent[i] = time.Now()
		if v := j.Decide(Out, bytes.Clone(p)); !v.Held {
			t.Fatalf("%+v, want held", v)
		}
	}
	for i := range pkts {
		select {
		case a := <-got:
			if !bytes.Equal(a.data, pkts[i]) {
				t.Fatalf("delivery %d is not packet %d: out of order", i, i)
			}
			if took := a.at.Sub(sent[i]); took < delay || took > delay+2*time.Second {
				t.Errorf("packet %d came out after %v, want %v or a little more", i, took, delay)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("packet %d never came out", i)
		}
	}
}

func TestRateLimiter(t *testing.T) {
	// 10 Mbit/s sends a 1500-byte packet in 1.2 ms.
	const gap = 1200 * time.Microsecond
	h := newHarness(t, Config{Rate: 10_000_000, QueueLimit: 5})
	pkt := make([]byte, 1500)
	for i := range 8 {
		pkt[0] = byte(i)
		v := h.j.Decide(Out, pkt)
		switch {
		case i < 5 && !v.Held:
			t.Fatalf("packet %d: %+v, want it queued", i, v)
		case i >= 5 && v.Drop != DropQueueFull:
			t.Fatalf("packet %d: %+v, want it tail-dropped", i, v)
		}
	}
	h.advance(gap - time.Nanosecond)
	if n := len(h.deliveries()); n != 0 {
		t.Fatalf("%d delivered before the first was sent", n)
	}
	h.advance(time.Nanosecond)
	// The first is sent: there is room for one more, which departs after
	// the fifth.
	pkt[0] = 8
	if v := h.j.Decide(Out, pkt); !v.Held {
		t.Fatalf("a packet after the first departed: %+v, want it queued", v)
	}
	pkt[0] = 9
	if v := h.j.Decide(Out, pkt); v.Drop != DropQueueFull {
		t.Fatalf("%+v, want the queue full again", v)
	}
	for range 5 {
		h.advance(gap)
	}
	got := h.deliveries()
	want := []byte{0, 1, 2, 3, 4, 8}
	if len(got) != len(want) {
		t.Fatalf("%d delivered, want %d", len(got), len(want))
	}
	for i, d := range got {
		if d.pkt.Data[0] != want[i] || d.after() != time.Duration(i+1)*gap {
			t.Errorf("delivery %d: packet %d after %v; want packet %d after %v", i, d.pkt.Data[0], d.after(), want[i], time.Duration(i+1)*gap)
		}
	}
	if got[0].pkt.Note != "rate-limited 1.2ms" || got[4].pkt.Note != "rate-limited 6ms" || got[5].pkt.Note != "rate-limited 6ms" {
		t.Errorf("notes %q, %q, %q; want rate-limited 1.2ms, 6ms and 6ms", got[0].pkt.Note, got[4].pkt.Note, got[5].pkt.Note)
	}
	st := h.j.Stats().Out
	if st != (DirStats{Packets: 10, RateQueued: 6, RateDropped: 4}) {
		t.Errorf("stats %+v; want 10 packets, 6 queued, 4 dropped", st)
	}
}

func TestRateThenDelay(t *testing.T) {
	h := newHarness(t, Config{Rate: 10_000_000, Delay: 10 * time.Millisecond})
	for range 3 {
		h.j.Decide(In, make([]byte, 1500))
	}
	h.advance(11200*time.Microsecond - time.Nanosecond)
	if n := len(h.deliveries()); n != 0 {
		t.Fatalf("%d delivered before 1.2ms + 10ms", n)
	}
	h.advance(time.Nanosecond)
	h.advance(2400 * time.Microsecond)
	got := h.deliveries()
	if len(got) != 3 || got[2].after() != 13600*time.Microsecond || got[2].pkt.Note != "rate-limited 3.6ms, delayed 10ms" {
		t.Errorf("%d delivered, the last after %v noted %q; want 3, after 13.6ms, rate-limited 3.6ms, delayed 10ms", len(got), got[len(got)-1].after(), got[len(got)-1].pkt.Note)
	}
}

func TestReorderAfterTheNextTwo(t *testing.T) {
	h := newHarness(t, Config{Reorder: 1, Seed: 1})
	a, b, c := tcpPacket(4, 1, nil), tcpPacket(4, 2, nil), tcpPacket(4, 3, nil)
	if v := h.j.Decide(In, bytes.Clone(a)); !v.Held {
		t.Fatalf("%+v, want it held back", v)
	}
	if err := h.j.SetConfig(Config{Duplicate: 0.0000001}); err != nil { // faults, but none that hold
		t.Fatal(err)
	}
	if v := h.j.Decide(In, bytes.Clone(b)); v.Held || v.Drop != "" {
		t.Fatalf("%+v, want it passed", v)
	}
	h.settle()
	if n := len(h.deliveries()); n != 0 {
		t.Fatal("the reordered packet came out after one packet passed it")
	}
	h.j.Decide(Out, bytes.Clone(c)) // the other direction does not count
	h.settle()
	if n := len(h.deliveries()); n != 0 {
		t.Fatal("the reordered packet came out after a packet of the other direction")
	}
	h.j.Decide(In, bytes.Clone(c))
	h.settle()
	got := h.deliveries()
	if len(got) != 1 || !bytes.Equal(got[0].pkt.Data, a) || got[0].pkt.Note != "reordered" || got[0].after() != 0 {
		t.Fatalf("deliveries %+v; want packet a, reordered, at once", got)
	}
	if st := h.j.Stats().In; st.Reordered != 1 || st.HeldNow != 0 || st.Packets != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestReorderTimesOut(t *testing.T) {
	h := newHarness(t, Config{Reorder: 1})
	h.j.Decide(Out, tcpPacket(4, 1, nil))
	h.advance(reorderTimeout - time.Nanosecond)
	if n := len(h.deliveries()); n != 0 {
		t.Fatal("came out before the timeout")
	}
	h.advance(time.Nanosecond)
	if n := len(h.deliveries()); n != 1 {
		t.Fatalf("%d delivered at the timeout, want 1", n)
	}
}

func TestReorderWithDelayInOneBatch(t *testing.T) {
	// a is reordered; b and c are delayed as much: when they come out, a
	// comes right after them, in the same deliver call.
	h := newHarness(t, Config{Reorder: 1, Delay: 20 * time.Millisecond})
	a, b, c := tcpPacket(6, 1, nil), tcpPacket(6, 2, nil), tcpPacket(6, 3, nil)
	h.j.Decide(Out, bytes.Clone(a))
	if err := h.j.SetConfig(Config{Delay: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	h.j.Decide(Out, bytes.Clone(b))
	h.j.Decide(Out, bytes.Clone(c))
	h.advance(20 * time.Millisecond)
	got := h.deliveries()
	if len(got) != 3 {
		t.Fatalf("%d delivered, want 3", len(got))
	}
	for i, want := range [][]byte{b, c, a} {
		if !bytes.Equal(got[i].pkt.Data, want) || got[i].call != 1 {
			t.Errorf("delivery %d in call %d: %x; want %x in call 1", i, got[i].call, got[i].pkt.Data[:8], want[:8])
		}
	}
	if got[2].pkt.Note != "delayed 20ms, reordered" {
		t.Errorf("note %q", got[2].pkt.Note)
	}
}

func TestDuplicateHeld(t *testing.T) {
	h := newHarness(t, Config{Duplicate: 1, Delay: time.Millisecond, Corrupt: 1})
	pkt := tcpPacket(4, 1, []byte("x"))
	v := h.j.Decide(In, pkt)
	if !v.Held || !v.Dup || v.Note != NoteCorrupted {
		t.Fatalf("%+v, want held, duplicated, corrupted", v)
	}
	if st := h.j.Stats().In; st.HeldNow != 2 {
		t.Errorf("%d held, want 2", st.HeldNow)
	}
	h.advance(time.Millisecond)
	got := h.deliveries()
	if len(got) != 2 || !bytes.Equal(got[0].pkt.Data, pkt) || !bytes.Equal(got[1].pkt.Data, pkt) ||
		got[0].pkt.Note != "corrupted, delayed 1ms" || got[1].pkt.Note != "corrupted, delayed 1ms, duplicate" {
		t.Fatalf("deliveries %+v; want the corrupted packet twice", got)
	}
	got[0].pkt.Data[0] = 0 // each copy is its own
	if got[1].pkt.Data[0] == 0 {
		t.Error("the two copies share their bytes")
	}
}

func TestSetConfigLive(t *testing.T) {
	h := newHarness(t, Config{})
	pkt := tcpPacket(4, 1, nil)
	if h.j.Applies(Both) || h.j.Decide(In, pkt) != (Verdict{}) {
		t.Fatal("no faults, yet they apply")
	}
	if err := h.j.SetConfig(Config{Loss: 1, Dir: Out}); err != nil {
		t.Fatal(err)
	}
	if v := h.j.Decide(Out, pkt); v.Drop != DropLoss {
		t.Errorf("loss 100%%: %+v", v)
	}
	if v := h.j.Decide(In, pkt); v != (Verdict{}) {
		t.Errorf("loss only out: in %+v", v)
	}
	if err := h.j.SetConfig(Config{Loss: -1}); err == nil || h.j.Config().Loss != 1 {
		t.Errorf("SetConfig(loss -100%%): %v, and the config is now %v", err, h.j.Config())
	}
	// A packet held when the faults are turned off still comes out at its time.
	if err := h.j.SetConfig(Config{Delay: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if v := h.j.Decide(In, pkt); !v.Held {
		t.Fatalf("%+v, want it held", v)
	}
	if err := h.j.SetConfig(Config{}); err != nil {
		t.Fatal(err)
	}
	if h.j.Applies(Both) {
		t.Error("faults apply after they were turned off")
	}
	h.advance(10 * time.Millisecond)
	if n := len(h.deliveries()); n != 1 {
		t.Errorf("%d delivered, want the one held before the faults were turned off", n)
	}
	if c := h.j.Config(); c.Dir != Both || c.QueueLimit != DefaultQueueLimit || c.Seed == 0 {
		t.Errorf("Config() = %+v; want the defaults filled in and the seed", c)
	}
}

func TestSetConfigKeepsOrRestartsTheStreams(t *testing.T) {
	cfg := Config{Loss: 0.3, Corrupt: 0.3, Seed: 9}
	pkts := packets(5, 400)
	ref := newHarness(t, cfg)
	want, _ := run(ref.j, In, pkts)

	h := newHarness(t, cfg)
	got1, _ := run(h.j, In, pkts[:200])
	next := cfg
	next.Seed = 0 // keep the seed
	if err := h.j.SetConfig(next); err != nil {
		t.Fatal(err)
	}
	got2, _ := run(h.j, In, pkts[200:])
	for i, v := range append(got1, got2...) {
		if v != want[i] {
			t.Fatalf("packet %d: %+v after SetConfig, %+v without; want the stream to go on", i, v, want[i])
		}
	}

	// A new seed restarts the streams, as if New had been given it.
	if err := h.j.SetConfig(Config{Loss: 0.3, Corrupt: 0.3, Seed: 10}); err != nil {
		t.Fatal(err)
	}
	fresh := newHarness(t, Config{Loss: 0.3, Corrupt: 0.3, Seed: 10})
	a, _ := run(h.j, In, pkts)
	b, _ := run(fresh.j, In, pkts)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("packet %d: %+v after reseeding, %+v from New", i, a[i], b[i])
		}
	}
	if h.j.Seed() != 10 {
		t.Errorf("Seed() = %d, want 10", h.j.Seed())
	}
}

func TestCloseDropsWhatIsHeld(t *testing.T) {
	h := newHarness(t, Config{Delay: MaxDelay, Loss: 0.5, Seed: 3})
	held := uint64(0)
	for range 20 {
		if h.j.Decide(Out, tcpPacket(4, 1, nil)).Held {
			held++
		}
	}
	lost := h.j.Stats().Out.Lost
	h.j.Close()
	h.j.Close() // twice is fine
	st := h.j.Stats().Out
	if st.HeldNow != 0 || st.Lost != lost+held {
		t.Errorf("after Close: %+v; want none held and %d more lost", st, held)
	}
	pkt := tcpPacket(4, 1, nil)
	orig := bytes.Clone(pkt)
	for range 10 {
		if v := h.j.Decide(Out, pkt); v != (Verdict{}) || !bytes.Equal(pkt, orig) {
			t.Fatalf("Decide after Close: %+v; want the packet passed untouched", v)
		}
	}
	if h.j.Applies(Both) {
		t.Error("faults apply after Close")
	}
	if err := h.j.SetConfig(Config{Loss: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("SetConfig after Close: %v", err)
	}
	if n := len(h.deliveries()); n != 0 {
		t.Errorf("%d delivered", n)
	}
}

func TestHoldCaps(t *testing.T) {
	h := newHarness(t, Config{Delay: time.Second})
	h.j.capPackets, h.j.capBytes = 10, 1000 // before the first Decide
	for i := range 9 {
		if v := h.j.Decide(In, make([]byte, 100)); !v.Held {
			t.Fatalf("packet %d: %+v, want held", i, v)
		}
	}
	if v := h.j.Decide(Out, make([]byte, 101)); v.Drop != DropHoldFull {
		t.Fatalf("past the bytes cap: %+v, want %q", v, DropHoldFull)
	}
	if v := h.j.Decide(Out, make([]byte, 100)); !v.Held {
		t.Fatalf("up to the bytes cap: %+v, want held", v)
	}
	if v := h.j.Decide(Out, nil); v.Drop != DropHoldFull {
		t.Fatalf("past the packets cap: %+v, want %q", v, DropHoldFull)
	}
	if st := h.j.Stats(); st.Out.Lost != 2 || st.In.HeldNow != 9 || st.Out.HeldNow != 1 {
		t.Errorf("stats %+v; want 2 lost out, 9 held in and 1 out", st)
	}
	h.advance(time.Second)
	if got := len(h.deliveries()); got != 10 {
		t.Errorf("%d delivered, want 10", got)
	}
	if v := h.j.Decide(Out, make([]byte, 1000)); !v.Held {
		t.Errorf("once the held packets came out: %+v, want held", v)
	}
}

func TestDeliverMayCallDecide(t *testing.T) {
	var j *Injector
	var mu sync.Mutex
	var verdicts []Verdict
	done := make(chan struct{})
	j, err := New(Config{Delay: time.Millisecond, Dir: In}, func(d Dir, pkts []Released) {
		// As netstack answers an inbound packet at once, on this goroutine.
		mu.Lock()
		defer mu.Unlock()
		for _, p := range pkts {
			verdicts = append(verdicts, j.Decide(Out, p.Data))
			_ = j.Stats()
		}
		if len(verdicts) == 3 {
			close(done)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for range 3 {
		j.Decide(In, tcpPacket(4, 1, nil))
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the held packets never came out")
	}
}

func BenchmarkDecideNoFault(b *testing.B) {
	j, err := New(Config{Loss: 0.05, Dir: In}, func(Dir, []Released) {})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	pkt := tcpPacket(4, 1, make([]byte, 1400))
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		j.Decide(Out, pkt)
	}
}

func BenchmarkDecideLoss(b *testing.B) {
	j, err := New(Config{Loss: 0.05, Corrupt: 0.001}, func(Dir, []Released) {})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	pkt := tcpPacket(4, 1, make([]byte, 1400))
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		j.Decide(Out, pkt)
	}
}

func TestDecideWithoutFaultsDoesNotAllocate(t *testing.T) {
	j, err := New(Config{Loss: 0.05, Dir: In}, func(Dir, []Released) {})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	pkt := tcpPacket(4, 1, nil)
	if n := testing.AllocsPerRun(1000, func() { j.Decide(Out, pkt) }); n != 0 {
		t.Errorf("Decide with no fault for the direction: %v allocations", n)
	}
	if n := testing.AllocsPerRun(1000, func() { j.Decide(In, pkt) }); n != 0 {
		t.Errorf("Decide with loss: %v allocations", n)
	}
}

func TestStatsJSON(t *testing.T) {
	b, err := json.Marshal(Stats{In: DirStats{Packets: 1, RateQueued: 2, HeldNow: 3}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"in":{"packets":1,"lost":0,"corrupted":0,"duplicated":0,"reordered":0,"delayed":0,"rate_queued":2,"rate_dropped":0,"held_now":3},` +
		`"out":{"packets":0,"lost":0,"corrupted":0,"duplicated":0,"reordered":0,"delayed":0,"rate_queued":0,"rate_dropped":0,"held_now":0}}`
	if string(b) != want {
		t.Errorf("JSON\n\t%s\nwant\n\t%s", b, want)
	}
}
