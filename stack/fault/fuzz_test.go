package fault

import (
	"bytes"
	"testing"
	"time"
)

// FuzzDecide runs arbitrary bytes through an Injector with arbitrary faults,
// in both directions, and checks the invariants: Decide never panics, a
// packet keeps its length, it changes in exactly one bit when it is
// corrupted and not at all otherwise, and every held packet comes out once
// (twice when duplicated), as long as it went in.
func FuzzDecide(f *testing.F) {
	f.Add(tcpPacket(4, 1, []byte("hello")), uint8(20), uint8(50), uint8(20), uint8(20), uint16(1000), uint16(500), uint16(10_000), uint8(3), uint64(1))
	f.Add(tcpPacket(6, 1, nil), uint8(0), uint8(255), uint8(255), uint8(255), uint16(0), uint16(0), uint16(0), uint8(0), uint64(2))
	f.Add([]byte{}, uint8(0), uint8(255), uint8(0), uint8(0), uint16(0), uint16(0), uint16(1), uint8(1), uint64(0))
	f.Add([]byte{0x4f, 0, 0, 1}, uint8(0), uint8(255), uint8(0), uint8(128), uint16(0), uint16(65535), uint16(0), uint8(0), uint64(3))
	f.Fuzz(func(t *testing.T, data []byte, loss, corrupt, dup, reorder uint8, delayUS, jitterUS, rateKbit uint16, queue uint8, seed uint64) {
		cfg := Config{
			Loss:       float64(loss) / 255,
			Corrupt:    float64(corrupt) / 255,
			Duplicate:  float64(dup) / 255,
			Reorder:    float64(reorder) / 255,
			Delay:      time.Duration(delayUS) * time.Microsecond,
			Jitter:     time.Duration(jitterUS) * time.Microsecond,
			QueueLimit: int(queue),
			Seed:       seed,
		}
		if rateKbit > 0 {
			cfg.Rate = MinRate + uint64(rateKbit)*1000
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("a valid config refused: %v", err)
		}
		_ = cfg.String()
		h := newHarness(t, cfg)
		var want int // packets to come out
		for i := range 6 {
			d := In
			if i%2 == 1 {
				d = Out
			}
			pkt := bytes.Clone(data)
			v := h.j.Decide(d, pkt)
			if len(pkt) != len(data) {
				t.Fatalf("Decide changed the length from %d to %d", len(data), len(pkt))
			}
			switch n := len(diffBits(data, pkt)); {
			case v.Drop != "":
				if v.Held || v.Dup {
					t.Fatalf("dropped and more: %+v", v)
				}
				continue
			case v.Note == NoteCorrupted && n != 1:
				t.Fatalf("corrupted in %d bits, want 1", n)
			case v.Note != NoteCorrupted && n != 0:
				t.Fatalf("not corrupted, yet %d bits changed", n)
			}
			if v.Held {
				want++
				if v.Dup {
					want++
				}
			}
		}
		h.advance(24 * time.Hour) // past everything the faults can hold
		got := h.deliveries()
		if len(got) != want {
			t.Fatalf("%d came out, want %d", len(got), want)
		}
		for _, d := range got {
			if len(d.pkt.Data) != len(data) {
				t.Fatalf("a held packet of %d bytes came out with %d", len(data), len(d.pkt.Data))
			}
		}
		st := h.j.Stats()
		if st.In.HeldNow != 0 || st.Out.HeldNow != 0 {
			t.Fatalf("still held: %+v", st)
		}
		if cfg.Active() && st.In.Packets+st.Out.Packets != 6 {
			t.Fatalf("stats %+v; want 6 packets counted", st)
		}
	})
}

// FuzzParse checks the flag parsers: no panic, and what they accept is in
// range; a rate survives its own formatting.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"5%", "0.1%", "0", "10mbit", "1.5Gbit/s", "64000bit", "10mbps", "1e3%", " 7 kibit "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := ParsePercent(s); err == nil && !(p >= 0 && p <= 1) {
			t.Fatalf("ParsePercent(%q) = %v", s, p)
		}
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r != 0 && r < MinRate {
			t.Fatalf("ParseRate(%q) = %d, below the minimum", s, r)
		}
		if r != 0 && r < 1<<50 { // exact in a float64 with room to spare
			if back, err := ParseRate(formatRate(r)); err != nil || back != r {
				t.Fatalf("ParseRate(%q) = %d; formatted %q, parsed back %d, %v", s, r, formatRate(r), back, err)
			}
		}
	})
}
