package reference

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ustack/ustack/tunif"
	"github.com/ustack/ustack/tunif/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// TestEchoAndClose runs the reference stack on a TUN in the test's private
// namespace, configured as ustack bench does it, echoes a message from a
// kernel socket through it, and checks that closing the listener ends Accept
// with net.ErrClosed and that Close removes the interface and leaves no
// goroutine behind.
func TestEchoAndClose(t *testing.T) {
	netnstest.Require(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const name = "ref0"
	host := netip.MustParsePrefix("198.18.9.1/24")
	addr := netip.MustParsePrefix("198.18.9.2/24")
	s, err := New(name, []netip.Prefix{addr}, tunif.DefaultMTU)
	if err != nil {
		netnstest.Skipf(t, "cannot run the reference stack on a TUN here: %v", err)
	}
	defer s.Close()
	if err := tunif.Configure(tunif.Config{Name: name, MTU: tunif.DefaultMTU, Addrs: []netip.Prefix{host}}); err != nil {
		t.Fatalf("configure %s: %v", name, err)
	}
	if _, err := New(name, []netip.Prefix{addr}, tunif.DefaultMTU); err == nil {
		t.Errorf("a second New(%s) worked: want it refused while the first holds the name", name)
	}

	ln, err := s.Listen(netip.AddrPortFrom(addr.Addr(), 7))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c)
		accepted <- err
	}()
	c, err := net.DialTimeout("tcp", "198.18.9.2:7", 5*time.Second)
	if err != nil {
		t.Fatalf("dial the reference stack: %v", err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("hello, fdbased")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo: %q, %v; want %q", got, err, msg)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Errorf("echo server: %v", err)
	}

	go func() { _, err := ln.Accept(); accepted <- err }()
	time.Sleep(20 * time.Millisecond) // let Accept block
	ln.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked 5 s after Close")
	}

	s.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := net.InterfaceByName(name); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists 3 s after Close", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err() after Close = %v, want nil", err)
	}
}
