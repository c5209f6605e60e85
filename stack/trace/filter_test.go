package trace

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestFilterMatch(t *testing.T) {
	tcp4 := tcpPacket(netip.AddrPortFrom(peer4, 43512), netip.AddrPortFrom(stack4, 5000), syn, 1, 0, 1, nil, "")
	tcp6 := tcpPacket(netip.AddrPortFrom(stack6, 5000), netip.AddrPortFrom(peer6, 43512), ack, 1, 1, 1, nil, "")
	udp4 := udpPacket(netip.AddrPortFrom(peer4, 5353), netip.AddrPortFrom(stack4, 53), "q")
	icmp4 := echo(peer4, stack4, false, 1, 1, "")
	icmp6 := echo(stack6, peer6, true, 1, 1, "")
	packets := [][]byte{tcp4, tcp6, udp4, icmp4, icmp6}
	for _, tc := range []struct {
		expr string
		want [5]bool // tcp4, tcp6, udp4, icmp4, icmp6
	}{
		{"tcp", [5]bool{true, true, false, false, false}},
		{"udp", [5]bool{false, false, true, false, false}},
		{"icmp", [5]bool{false, false, false, true, true}},
		{"ip", [5]bool{true, false, true, true, false}},
		{"ip6", [5]bool{false, true, false, false, true}},
		{"port 5000", [5]bool{true, true, false, false, false}},
		{"src port 5000", [5]bool{false, true, false, false, false}},
		{"dst port 5000", [5]bool{true, false, false, false, false}},
		{"port 53", [5]bool{false, false, true, false, false}},
		{"host 198.18.0.1", [5]bool{true, false, true, true, false}},
		{"src host 198.18.0.1", [5]bool{true, false, true, true, false}},
		{"dst host 198.18.0.1", [5]bool{false, false, false, false, false}},
		{"host fd75::1", [5]bool{false, true, false, false, true}},
		{"dst host fd75::1", [5]bool{false, true, false, false, true}},
		{"net 198.18.0.0/15", [5]bool{true, false, true, true, false}},
		{"net fd75::/64", [5]bool{false, true, false, false, true}},
		{"src net 198.18.0.2/32", [5]bool{false, false, false, false, false}},
		{"not tcp", [5]bool{false, false, true, true, true}},
		{"! tcp", [5]bool{false, false, true, true, true}},
		{"!tcp", [5]bool{false, false, true, true, true}},
		{"tcp and ip6", [5]bool{false, true, false, false, false}},
		{"tcp && ip6", [5]bool{false, true, false, false, false}},
		{"udp or icmp", [5]bool{false, false, true, true, true}},
		{"udp||icmp", [5]bool{false, false, true, true, true}},
		// Precedence: not > and > or.
		{"udp or icmp and ip6", [5]bool{false, false, true, false, true}},
		{"(udp or icmp) and ip6", [5]bool{false, false, false, false, true}},
		{"not udp and not icmp", [5]bool{true, true, false, false, false}},
		{"not (udp or icmp)", [5]bool{true, true, false, false, false}},
		{"not not tcp", [5]bool{true, true, false, false, false}},
		// tcpdump's protocol before a qualifier.
		{"tcp port 5000", [5]bool{true, true, false, false, false}},
		{"udp port 5000", [5]bool{false, false, false, false, false}},
		{"ip host 198.18.0.1 or ip6 net fd75::/16", [5]bool{true, true, true, true, true}},
		{"TCP AND Port 5000", [5]bool{true, true, false, false, false}},
	} {
		f, err := ParseFilter(tc.expr)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		for i, p := range packets {
			if got := f.Match(p); got != tc.want[i] {
				t.Errorf("%q on packet %d: %t, want %t", tc.expr, i, got, tc.want[i])
			}
		}
	}
	var none *Filter
	if !none.Match(nil) || !none.Match(tcp4) {
		t.Error("a nil filter must match everything")
	}
}

// TestFilterShortPackets: what a packet is too short to tell fails.
func TestFilterShortPackets(t *testing.T) {
	tcp4 := tcpPacket(netip.AddrPortFrom(peer4, 43512), netip.AddrPortFrom(stack4, 5000), syn, 1, 0, 1, nil, "")
	port, _ := ParseFilter("port 5000")
	host, _ := ParseFilter("host 198.18.0.1")
	notPort, _ := ParseFilter("not port 5000")
	for n := range len(tcp4) {
		b := tcp4[:n]
		if n < header.IPv4MinimumSize+4 && port.Match(b) {
			t.Errorf("port matched %d bytes", n)
		}
		if n < header.IPv4MinimumSize && host.Match(b) {
			t.Errorf("host matched %d bytes", n)
		}
		if want := n < header.IPv4MinimumSize+4; notPort.Match(b) != want {
			t.Errorf("not port on %d bytes: %t", n, !want)
		}
	}
}

func TestFilterErrors(t *testing.T) {
	for _, tc := range []struct {
		expr, want string
	}{
		{"", `trace filter "": empty expression`},
		{"   ", `trace filter "   ": empty expression`},
		{"port", `trace filter "port": "port" needs a number 1-65535 at position 5`},
		{"port foo", `trace filter "port foo": "port" needs a number 1-65535, not "foo", at position 6`},
		{"port 0", `trace filter "port 0": "port" needs a number 1-65535, not "0", at position 6`},
		{"port 65536", `trace filter "port 65536": "port" needs a number 1-65535, not "65536", at position 6`},
		{"port and tcp", `trace filter "port and tcp": "port" needs a number 1-65535 at position 6`},
		{"foo", `trace filter "foo": unexpected "foo" at position 1`},
		{"tcp foo", `trace filter "tcp foo": unexpected "foo" at position 5`},
		{"host", `trace filter "host": "host" needs an IP address at position 5`},
		{"host 1.2.3", `trace filter "host 1.2.3": "host" needs an IP address, not "1.2.3", at position 6`},
		{"net 10.0.0.0", `trace filter "net 10.0.0.0": "net" needs a prefix like 198.18.0.0/15 or fd75::/64, not "10.0.0.0", at position 5`},
		{"src", `trace filter "src": "src" needs "port", "host" or "net" after it at position 4`},
		{"dst tcp", `trace filter "dst tcp": "dst" needs "port", "host" or "net" after it, not "tcp", at position 5`},
		{"tcp and", `trace filter "tcp and": "and" needs an expression after it at position 8`},
		{"tcp && (", `trace filter "tcp && (": "(" needs an expression after it at position 9`},
		{"tcp or", `trace filter "tcp or": "or" needs an expression after it at position 7`},
		{"not", `trace filter "not": "not" needs an expression after it at position 4`},
		{"(tcp", `trace filter "(tcp": "(" at position 1 is never closed: missing ")" at position 5`},
		{"tcp)", `trace filter "tcp)": unexpected ")" at position 4`},
		{"()", `trace filter "()": unexpected ")" at position 2`},
		{"tcp & udp", `trace filter "tcp & udp": unexpected "&" at position 5 (did you mean "&&"?)`},
		{"tcp | udp", `trace filter "tcp | udp": unexpected "|" at position 5 (did you mean "||"?)`},
		{"tcp udp", `trace filter "tcp udp": unexpected "udp" at position 5`},
	} {
		f, err := ParseFilter(tc.expr)
		if err == nil {
			t.Errorf("%q: no error, filter %v", tc.expr, f)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%q:\n got: %s\nwant: %s", tc.expr, err, tc.want)
		}
	}
}
