package stack

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ustack/ustack/stack/fault"
	"github.com/ustack/ustack/stack/tap"
)

// TestTCPRecoversFromFaults sends 2 MiB each way between two stacks over a
// link that loses, corrupts, duplicates and reorders packets both ways: TCP
// delivers every byte in order, and had to retransmit to do it.
func TestTCPRecoversFromFaults(t *testing.T) {
	faults := fault.Config{Loss: 0.05, Corrupt: 0.01, Duplicate: 0.01, Reorder: 0.01, Delay: time.Millisecond, Seed: 7}
	a, b, c := echoPair(t, 8, Config{Faults: faults}, 60*time.Second)
	payload := randomBytes(11, 2<<20)
	go c.Write(payload)
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("after %d bytes: %v", len(got), err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) || !bytes.Equal(got, payload) {
		t.Fatal("the echo differs from what was sent")
	}
	snap := b.Snapshot()
	fs := snap.Faults
	if fs == nil || fs.Stats.In.Lost == 0 || fs.Stats.Out.Lost == 0 || fs.Stats.In.Corrupted == 0 || fs.Stats.Out.Duplicated == 0 || fs.Stats.In.Delayed == 0 {
		t.Errorf("fault counters %+v", fs)
	}
	if snap.TCP.Retransmits == 0 || a.Snapshot().TCP.Retransmits == 0 {
		t.Errorf("no retransmissions on one side: b %d, a %d", snap.TCP.Retransmits, a.Snapshot().TCP.Retransmits)
	}
	if snap.TCP.ChecksumErrors == 0 && a.Snapshot().TCP.ChecksumErrors == 0 {
		t.Error("corrupted segments were not caught by a TCP checksum")
	}
	// Faults off on the running stack: the counters stop moving.
	if err := b.Link().SetFaults(fault.Config{}); err != nil {
		t.Fatal(err)
	}
	before := b.Link().Faults().Stats()
	c.Write([]byte("no more faults\n"))
	io.ReadFull(c, make([]byte, 15))
	if after := b.Link().Faults().Stats(); after.In.Lost != before.In.Lost || after.Out.Lost != before.Out.Lost {
		t.Errorf("faults off, yet packets were lost: %+v → %+v", before, after)
	}
}

func TestBadFaultsAreRefused(t *testing.T) {
	da, _ := newPipe(8, 1500)
	_, err := New(da, Config{Addrs: []netip.Prefix{v4B}, MTU: 1500, Faults: fault.Config{Loss: 1.5}})
	if err == nil {
		t.Fatal("a loss of 150% was accepted")
	}
}

// TestDuplicatesWithBatchOfOne: a duplicated packet needs a second transmit
// buffer even when the device takes one packet a batch.
func TestDuplicatesWithBatchOfOne(t *testing.T) {
	_, b, c := echoPair(t, 1, Config{Faults: fault.Config{Duplicate: 1, Dir: fault.Out, Seed: 1}}, 10*time.Second)
	c.Write([]byte("twice\n"))
	got := make([]byte, 6)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "twice\n" {
		t.Fatalf("%q, %v", got, err)
	}
	if st := b.Link().Faults().Stats(); st.Out.Duplicated == 0 {
		t.Errorf("nothing duplicated: %+v", st)
	}
}

// TestFaultSettingsWithoutAFaultAreKept: a seed and a direction given before
// any fault stay in force when a fault is turned on later.
func TestFaultSettingsWithoutAFaultAreKept(t *testing.T) {
	da, _ := newPipe(8, 1500)
	b, err := New(da, Config{Addrs: []netip.Prefix{v4B}, MTU: 1500, Faults: fault.Config{Seed: 42, Dir: fault.In, QueueLimit: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	j := b.Link().Faults()
	if j == nil {
		t.Fatal("the settings were dropped")
	}
	cfg := j.Config()
	cfg.Loss = 0.05
	if err := b.Link().SetFaults(cfg); err != nil {
		t.Fatal(err)
	}
	if got := b.Link().Faults().Config(); got.Seed != 42 || got.Dir != fault.In || got.QueueLimit != 10 || got.Loss != 0.05 {
		t.Errorf("config after turning loss on: %+v", got)
	}
}

// TestFaultSeedOnTheLink: the same seed and the same packets crossing the
// link give the same drop decisions, packet by packet; another seed others.
func TestFaultSeedOnTheLink(t *testing.T) {
	decisions := func(seed uint64) string {
		da, db := newPipe(8, 1500)
		b, err := New(db, Config{Addrs: []netip.Prefix{v4B}, MTU: 1500, Faults: fault.Config{Loss: 0.3, Dir: fault.In, Seed: seed}})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		defer da.Close()
		sub := b.Link().Packets().Subscribe(1024, 64)
		defer sub.Close()
		var got []byte
		for seq := range uint16(200) {
			da.Write([][]byte{append(make([]byte, DeviceOffset), echoRequest4(v4A.Addr(), v4B.Addr(), 1, seq, []byte("seed"))...)}, DeviceOffset)
			// Each request is decided before the next is sent: the
			// decisions follow the packets' order.
			for {
				p := <-sub.C()
				if p.Dir == tap.In {
					got = append(got, map[bool]byte{true: 'x', false: '.'}[p.Drop != ""])
					break
				}
			}
		}
		return string(got)
	}
	first, again, other := decisions(9), decisions(9), decisions(10)
	if first != again {
		t.Errorf("seed 9 twice, different decisions:\n%s\n%s", first, again)
	}
	if first == other {
		t.Errorf("seeds 9 and 10 made the same decisions: %s", first)
	}
	if n := strings.Count(first, "x"); n < 30 || n > 90 {
		t.Errorf("30%% loss dropped %d of 200: %s", n, first)
	}
}
