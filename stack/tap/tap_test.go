package tap

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBusDeliversDropsAndUnsubscribes(t *testing.T) {
	var b Bus[int]
	if b.Active() {
		t.Fatal("a bus without subscribers is active")
	}
	b.Publish(1) // nobody listens: nothing happens
	small := b.Subscribe(2, 0)
	big := b.Subscribe(10, 0)
	if !b.Active() {
		t.Fatal("a bus with subscribers is not active")
	}
	for i := range 5 {
		b.Publish(i)
	}
	if got := len(small.C()); got != 2 || small.Dropped() != 3 {
		t.Errorf("small queue: %d queued, %d dropped; want 2 and 3", got, small.Dropped())
	}
	if got := len(big.C()); got != 5 || big.Dropped() != 0 {
		t.Errorf("big queue: %d queued, %d dropped; want 5 and 0", got, big.Dropped())
	}
	if first := <-small.C(); first != 0 {
		t.Errorf("small queue starts with %d, want the oldest event, 0", first)
	}
	small.Close()
	small.Close() // twice is fine
	b.Publish(9)
	if len(small.C()) != 1 || len(big.C()) != 6 {
		t.Errorf("after Close: small has %d (want its 1 old event), big %d (want 6)", len(small.C()), len(big.C()))
	}
	big.Close()
	if b.Active() {
		t.Error("a bus whose subscribers all left is active")
	}
}

func TestPublishPacketCopiesTheSnapLength(t *testing.T) {
	var b Bus[Packet]
	headers := b.Subscribe(4, 8)
	data := []byte("0123456789abcdef")
	now := time.Now()
	PublishPacket(&b, now, Out, data)
	data[0] = 'X' // the caller reuses its buffer at once
	p := <-headers.C()
	if string(p.Data) != "01234567" || p.Len != 16 || p.Dir != Out || !p.Time.Equal(now) {
		t.Errorf("got %q len %d dir %v; want the first 8 bytes, copied, of a 16-byte packet going out", p.Data, p.Len, p.Dir)
	}
	whole := b.Subscribe(4, 0)
	PublishPacket(&b, now, In, data)
	if p := <-whole.C(); string(p.Data) != "X123456789abcdef" {
		t.Errorf("a subscriber with snap 0 got %q, want the whole packet", p.Data)
	}
	if p := <-headers.C(); len(p.Data) != 16 {
		t.Errorf("subscribers share one copy of the largest snap length: got %d bytes", len(p.Data))
	}
	headers.Close()
	whole.Close()
	if In.String() != "in" || Out.String() != "out" {
		t.Errorf("Dir strings: %q %q", In, Out)
	}
}
