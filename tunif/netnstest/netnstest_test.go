package netnstest_test

import (
	"net"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ustack/ustack/tunif/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// TestPrivateNamespace checks that the child sees a namespace of its own: lo
// is up and none of the host's interfaces is visible.
func TestPrivateNamespace(t *testing.T) {
	netnstest.Require(t)
	if !netnstest.InNamespace() {
		t.Fatal("Require returned, but InNamespace is false")
	}
	if got := os.Getenv(netnstest.ChildEnv); got != "1" {
		t.Errorf("%s = %q in the child, want 1", netnstest.ChildEnv, got)
	}

	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	for _, l := range links {
		a := l.Attrs()
		switch {
		case a.Name == "lo":
			if a.Flags&net.FlagUp == 0 {
				t.Errorf("lo is down in the private namespace (flags %v)", a.Flags)
			}
		case isFallbackTunnel(l.Type()):
			// The kernel gives every namespace a fallback device (tunl0,
			// sit0, ip6tnl0, gre0, …) of each tunnel module loaded; they
			// stay down and are not the host's.
			if a.Flags&net.FlagUp != 0 {
				t.Errorf("fallback device %s (%s) is up in a fresh namespace", a.Name, l.Type())
			}
		default:
			t.Errorf("link %s (type %s, index %d) is visible in the private namespace; only lo should be", a.Name, l.Type(), a.Index)
		}
	}

	// Loopback works: the tests can talk to themselves.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial loopback: %v", err)
	}
	c.Close()
}

func isFallbackTunnel(typ string) bool {
	switch typ {
	case "ipip", "sit", "ip6tnl", "gre", "gretap", "ip6gre", "ip6gretap", "vti", "vti6", "erspan", "ip6erspan", "tunnel", "tunnel6":
		return true
	}
	return false
}

// TestWithoutNamespace runs in either case: tests that need no namespace are
// never skipped.
func TestWithoutNamespace(t *testing.T) {
	if netnstest.InNamespace() {
		t.Log("running in the private network namespace")
	} else {
		t.Log("running in place, without a private network namespace")
	}
}
