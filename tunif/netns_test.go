package tunif

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/ustack/ustack/tunif/netnstest"
)

// holdNetns starts a process in a network namespace of its own (inside the
// test's) and returns the namespace's path; the process ends with the test.
func holdNetns(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		netnstest.Skipf(t, "unshare is not installed (apt-get install util-linux)")
	}
	cmd := exec.Command("unshare", "-n", "sleep", "120")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	path := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	// Wait until unshare has made the namespace: it differs from ours.
	self, _ := netns.Get()
	defer self.Close()
	for deadline := time.Now().Add(5 * time.Second); ; {
		h, err := netns.GetFromPath(path)
		if err == nil {
			other := !h.Equal(self)
			h.Close()
			if other {
				return path
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no namespace of its own for pid %d: %v", cmd.Process.Pid, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCreateInAnotherNamespace makes the interface in a namespace given by
// path: it appears there, configured and up, not here; packets sent there
// reach the device read here; Close removes it there.
func TestCreateInAnotherNamespace(t *testing.T) {
	netnstest.Require(t)
	checkNoLeaks(t)
	path := holdNetns(t)
	cfg := Config{Name: "nstest0", MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.30.1/24")}, Netns: path}
	i, err := Create(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if i.Netns() != path {
		t.Errorf("Netns() = %q", i.Netns())
	}
	if _, err := net.InterfaceByName("nstest0"); err == nil {
		t.Error("the interface is in the test's own namespace too")
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName("nstest0")
	if err != nil {
		t.Fatalf("the interface is not in the other namespace: %v", err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 || link.Attrs().MTU != 1500 {
		t.Errorf("link there: flags %v mtu %d", link.Attrs().Flags, link.Attrs().MTU)
	}
	addrs, _ := h.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "198.18.30.1/24" {
		t.Errorf("addresses there: %v", addrs)
	}

	// A ping from inside that namespace is read from the device here.
	if _, err := exec.LookPath("nsenter"); err == nil {
		r := startReader(i)
		ping := exec.Command("nsenter", "--net="+path, "ping", "-c", "3", "-i", "0.2", "-W", "1", "198.18.30.2")
		if err := ping.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			ping.Process.Kill()
			ping.Wait()
		}()
		timeout := time.After(5 * time.Second)
	wait:
		for {
			select {
			case p := <-r.packets:
				if len(p) >= 20 && p[0]>>4 == 4 && p[9] == 1 && netip.AddrFrom4([4]byte(p[16:20])) == netip.MustParseAddr("198.18.30.2") {
					break wait
				}
			case err := <-r.done:
				t.Fatalf("Read: %v", err)
			case <-timeout:
				t.Fatal("no ICMP packet from the other namespace read within 5 s")
			}
		}
	}

	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	var notFound netlink.LinkNotFoundError
	if _, err := h.LinkByName("nstest0"); !errors.As(err, &notFound) {
		t.Errorf("after Close the link is still there: %v", err)
	}
}

func TestCreateInMissingNamespace(t *testing.T) {
	netnstest.Require(t)
	_, err := Create(Config{Name: "nstest1", MTU: 1500, Netns: "ustack-no-such-namespace"})
	if !errors.Is(err, ErrNoNetns) {
		t.Fatalf("Create in a missing namespace: %v, want ErrNoNetns", err)
	}
	if _, err := Create(Config{Name: "nstest1", MTU: 1500, Netns: "/nonexistent/ns"}); !errors.Is(err, ErrNoNetns) {
		t.Errorf("a missing path: %v", err)
	}
}
