package main

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// TestBadInput runs ustack with each kind of bad input: one clear line on
// stderr, exit status 2, and nothing left behind in the namespace.
func TestBadInput(t *testing.T) {
	netnstest.Require(t)
	for _, tc := range []struct {
		name string
		args []string
		want string // on stderr
	}{
		{"no command", nil, "Usage:"},
		{"unknown command", []string{"upp"}, `ustack: unknown command "upp": run ustack --help`},
		{"unknown flag", []string{"up", "--bogus"}, "ustack up: flag provided but not defined: --bogus (run ustack up --help)"},
		{"stray argument", []string{"up", "now"}, `unexpected argument "now"`},
		{"name too long", []string{"up", "--name", "ustack-0123456789"}, "is 17 bytes"},
		{"name with a slash", []string{"up", "--name", "a/b"}, `interface name "a/b"`},
		{"malformed CIDR", []string{"up", "--addr", "198.18.0.1"}, `invalid value "198.18.0.1" for flag --addr: "198.18.0.1" is not an address with a prefix length`},
		{"malformed CIDR 2", []string{"up", "--addr", "198.18.0.300/24"}, `is not an address with a prefix length`},
		{"stack address not an address", []string{"up", "--stack-addr", "198.18.0.2/24"}, "without a prefix length"},
		{"stack address outside the prefix", []string{"up", "--stack-addr", "10.1.2.3"}, "--stack-addr 10.1.2.3 is not inside any host prefix"},
		{"stack address equals host", []string{"up", "--stack-addr", "198.18.0.1", "--stack-addr", "fd75:7374:6163:6b::2"}, "--stack-addr 198.18.0.1 is the host side's own address"},
		{"stack address is the broadcast", []string{"up", "--no-ipv6", "--stack-addr", "198.18.0.255"}, "is the broadcast address of 198.18.0.0/24"},
		{"host prefix without a stack address", []string{"up", "--stack-addr", "198.18.0.2"}, "--addr fd75:7374:6163:6b::1/64 has no userspace-stack address inside it"},
		{"no-ipv6 with an IPv6 address", []string{"up", "--no-ipv6", "--addr", "fd00::1/64"}, "--no-ipv6 conflicts with --addr fd00::1/64"},
		{"MTU too small", []string{"up", "--no-ipv6", "--mtu", "575"}, "MTU 575 is out of range"},
		{"MTU too large", []string{"up", "--mtu", "65536"}, "MTU 65536 is out of range"},
		{"MTU too small for IPv6", []string{"up", "--mtu", "1000"}, "--mtu 1000 is below IPv6's minimum link MTU of 1280: raise --mtu or pass --no-ipv6"},
		{"MTU not a number", []string{"up", "--mtu", "big"}, `invalid value "big" for flag --mtu`},
		{"port 0", []string{"up", "--port", "0"}, "--port 0 is out of range: it must be 1..65535"},
		{"port too large", []string{"up", "--port", "65536"}, "--port 65536 is out of range"},
		{"log format", []string{"up", "--log-format", "xml"}, `--log-format "xml": want text or json`},
		{"negative idle timeout", []string{"up", "--idle-timeout", "-1s"}, "--idle-timeout -1s is negative"},
		{"serve without --kernel", []string{"serve"}, "needs --kernel"},
		{"serve bad listen", []string{"serve", "--kernel", "--listen", "5000"}, `--listen "5000": want address:port`},
		{"client without target", []string{"client"}, "missing HOST:PORT"},
		{"client host name", []string{"client", "localhost:5000"}, "HOST must be an IP address"},
		{"client bad port", []string{"client", "198.18.0.2:0"}, "the port must be 1..65535"},
		{"client to loopback on netstack", []string{"client", "127.0.0.1:5000"}, "loopback address, which the userspace stack cannot reach"},
		{"client bad via address", []string{"client", "--via-addr", "nope", "198.18.0.2:5000"}, `invalid value "nope" for flag --via-addr`},
		{"client unknown flag among messages", []string{"client", "198.18.0.2:5000", "hi", "-x"}, "flag provided but not defined: -x (run ustack client --help; put arguments that start with - after --)"},
		{"stack address twice", []string{"up", "--no-ipv6", "--stack-addr", "198.18.0.2", "--stack-addr", "198.18.0.2"}, "198.18.0.2 is given twice"},
		{"host address is the network address", []string{"up", "--addr", "10.0.0.0/24"}, "--addr 10.0.0.0/24 is the network or broadcast address of 10.0.0.0/24"},
		{"IPv4-mapped IPv6 address", []string{"up", "--addr", "::ffff:10.0.0.1/120"}, "is an IPv4-mapped IPv6 address"},
		{"version takes no argument", []string{"version", "extra"}, `unexpected argument "extra"`},
		{"profiles in one file", []string{"up", "--cpuprofile", "/tmp/ustack-prof", "--memprofile", "/tmp/ustack-prof"}, `--cpuprofile and --memprofile name the same file "/tmp/ustack-prof": give each its own`},
		{"profile directory", []string{"bench", "--profile", "/nonexistent/ustack"}, `--profile "/nonexistent/ustack": give an existing directory (mkdir it first)`},
		{"ui port", []string{"up", "--ui", "127.0.0.1:http"}, `--ui "127.0.0.1:http": port "http" is not a number from 0 to 65535: give ADDR:PORT, like 127.0.0.1:8080`},
		{"ui address", []string{"up", "--ui", "1.2.3.4:5:6"}, `--ui "1.2.3.4:5:6": give ADDR:PORT, like 127.0.0.1:8080`},
		{"trace mode", []string{"up", "--trace=loud"}, `invalid value "loud" for flag --trace: "loud": give --trace (one line a packet), --trace=verbose (with every header field) or --trace=ladder`},
		{"trace filter without trace", []string{"up", "--trace-filter", "port 5000"}, "--trace-filter needs --trace"},
		{"trace filter syntax", []string{"up", "--trace", "--trace-filter", "port"}, `--trace-filter: `},
		{"trace filter word", []string{"up", "--trace", "--trace-filter", "tcp and bogus"}, `bogus`},
		{"pcap size", []string{"up", "--pcap", "x.pcap", "--pcap-max-bytes", "lots"}, `"lots" is not a size: give bytes, like 1000000, 64K, 100M or 2G`},
		{"pcap size without file", []string{"up", "--pcap-max-bytes", "1M"}, "--pcap-max-bytes needs --pcap FILE"},
		{"pcap in a missing directory", []string{"up", "--pcap", "/nonexistent/dir/x.pcap"}, "--pcap: open /nonexistent/dir/x.pcap: no such file or directory"},
		{"probe to stdout", []string{"up", "--tcp-probe", "-"}, "--tcp-probe needs a file name, not -"},
		{"probe and pcap the same file", []string{"up", "--pcap", "a", "--tcp-probe", "a"}, "--pcap and --tcp-probe name the same file"},
		{"metrics address", []string{"up", "--metrics", "9100"}, `--metrics "9100": give ADDR:PORT, like 127.0.0.1:9100`},
		{"kernel client with a tap", []string{"client", "--kernel", "--trace", "127.0.0.1:5000"}, "--trace is about the userspace stack: it does not work with --kernel"},
		{"kernel client with a TCP knob", []string{"client", "--kernel", "--cc", "reno", "127.0.0.1:5000"}, "--cc is about the userspace stack"},
		{"congestion control", []string{"up", "--cc", "vegas"}, `--cc: congestion control "vegas": want reno or cubic`},
		{"sack value", []string{"up", "--sack", "maybe"}, `invalid value "maybe" for flag --sack: "maybe": want on or off`},
		{"delayed ack", []string{"up", "--delayed-ack", "off"}, "netstack has no delayed-ACK timer to switch"},
		{"mss too large", []string{"up", "--mss", "1461"}, "--mss: MSS 1461 is outside 88..1460 (the MTU 1500 minus 40 bytes of IPv4 and TCP headers); give a smaller --mss or 0"},
		{"mss for a small MTU", []string{"up", "--no-ipv6", "--mtu", "600", "--mss", "1000"}, "--mss: MSS 1000 is outside 88..560"},
		{"rcvbuf order", []string{"up", "--tcp-rcvbuf", "65535,4096,4096"}, "--tcp-rcvbuf: TCP receive buffer 65535,4096,4096: want 4096 <= min <= default <= max"},
		{"rcvbuf shape", []string{"up", "--tcp-rcvbuf", "1,2"}, `"1,2": give MIN,DEFAULT,MAX`},
		{"sndbuf size", []string{"up", "--tcp-sndbuf", "4k,lots,8M"}, `"lots" is not a size`},
		{"loss over 100%", []string{"up", "--loss", "150%"}, "loss must be between 0% and 100%"},
		{"loss without %", []string{"up", "--loss", "5"}, "add a % sign, like 5%"},
		{"corrupt negative", []string{"up", "--corrupt", "-1%"}, "corrupt must be between 0% and 100%"},
		{"delay too long", []string{"up", "--delay", "1h"}, "delay"},
		{"rate unit", []string{"up", "--rate", "10mbps"}, "byte units are ambiguous"},
		{"rate number", []string{"up", "--rate", "fast"}, `invalid value "fast" for flag --rate`},
		{"fault dir", []string{"up", "--fault-dir", "sideways"}, `invalid value "sideways" for flag --fault-dir: want in, out or both (run ustack up --help)`},
		{"set with nothing", []string{"set"}, "nothing to set: give a fault flag"},
		{"set without a running ustack", []string{"set", "--name", "nothere", "--loss", "1%"}, "no running ustack answers on "},
		{"missing namespace", []string{"up", "--netns", "ustack-no-such-ns"}, "--netns: no such network namespace \"ustack-no-such-ns\": /run/netns/ustack-no-such-ns does not exist (make one with: ip netns add NAME)"},
		{"missing namespace path", []string{"serve", "--kernel", "--netns", "/proc/999999999/ns/net"}, "--netns: no such network namespace"},
		{"serve spec shape", []string{"up", "--serve", "ack"}, `--serve "ack": give KIND:PORT, like ack:5000 or http:80`},
		{"serve unknown app", []string{"up", "--serve", "ftp:21"}, `unknown app "ftp": the apps are ack, chargen, discard, echo, http`},
		{"serve bad port", []string{"up", "--serve", "echo:0"}, `"echo:0": the port must be 1..65535`},
		{"serve port twice", []string{"up", "--serve", "echo:7,discard:7"}, "port 7 is given to both echo and discard"},
		{"port and serve", []string{"up", "--port", "6000", "--serve", "echo:7"}, "--port and --serve both say where the ACK server runs"},
		{"jitter negative", []string{"up", "--jitter", "-1ms"}, "jitter"},
		{"queue limit negative", []string{"up", "--queue-limit", "-1"}, "queue"},
		{"reorder over 100%", []string{"up", "--reorder", "101%"}, "reorder must be between 0% and 100%"},
		{"duplicate not a percentage", []string{"up", "--duplicate", "x%"}, `invalid value "x%" for flag --duplicate: want a percentage`},
		{"seed negative", []string{"up", "--seed", "-1"}, `invalid value "-1" for flag --seed: give a whole number from 0 to 18446744073709551615`},
		{"rack value", []string{"up", "--rack", "sometimes"}, `invalid value "sometimes" for flag --rack: "sometimes": want on or off`},
		{"nagle value", []string{"up", "--nagle", "2"}, `"2": want on or off`},
		{"moderate-rcvbuf value", []string{"up", "--moderate-rcvbuf", "x"}, `"x": want on or off`},
		{"set bad delay before asking", []string{"set", "--name", "nothere", "--delay", "-5ms"}, "delay must not be negative"},
		{"allow without forward", []string{"up", "--allow", "10.0.0.0/8"}, "--allow needs --forward"},
		{"allow not a CIDR", []string{"up", "--forward", "--allow", "10.0.0.0/8,bogus"}, `--allow "10.0.0.0/8,bogus": "bogus" is not a CIDR`},
		{"run without a command", []string{"run"}, "missing COMMAND: ustack run [flags] -- COMMAND"},
		{"run with netns", []string{"run", "--netns", "x", "--", "true"}, "--netns: ustack run makes the namespace for COMMAND itself"},
		{"run with pcap to stdout", []string{"run", "--pcap", "-", "--", "true"}, "--pcap -: COMMAND's output is on stdout"},
		{"unknown user", []string{"up", "--user", "no-such-user-here"}, `--user "no-such-user-here": no such user`},
		{"keepalive negative", []string{"up", "--keepalive", "-5s"}, "--keepalive -5s is negative"},
		{"stats without a running ustack", []string{"stats", "--name", "nothere"}, "no running ustack answers on "},
		{"stats watch interval", []string{"stats", "--watch", "1ns"}, "--watch 1ns: give an interval of at least 10ms"},
		{"stats bad name", []string{"stats", "--name", "a/b"}, `interface name "a/b"`},
		{"plot without a file", []string{"plot"}, "ustack plot: which file? ustack plot FILE.csv draws a CSV recorded with ustack up --tcp-probe FILE.csv"},
		{"plot missing file", []string{"plot", "/nonexistent.csv"}, "open /nonexistent.csv: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runUstack(t, tc.args...)
			if code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not say %q", stderr, tc.want)
			}
			if tc.args != nil && strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("error is not one line: %q", stderr)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Errorf("it panicked: %s", stderr)
			}
			if stdout != "" && tc.args != nil {
				t.Errorf("stdout not empty: %q", stdout)
			}
			assertOnlyLoopback(t)
		})
	}
}

// TestNameInUse: an interface of that name exists.
func TestNameInUse(t *testing.T) {
	netnstest.Require(t)
	// A persistent TUN of that name, as a crashed or foreign program leaves.
	if out, err := exec.Command("ip", "tuntap", "add", "dev", "ustack0", "mode", "tun").CombinedOutput(); err != nil {
		netnstest.Skipf(t, "cannot make a TUN with ip tuntap: %v %s", err, out)
	}
	defer exec.Command("ip", "link", "del", "ustack0").Run()
	_, stderr, code := runUstack(t, "up")
	want := `ustack up: an interface named "ustack0" already exists: pick another --name, or remove it with: sudo ip link del ustack0`
	if code != 2 || strings.TrimSpace(stderr) != want {
		t.Errorf("exit %d, stderr %q; want 2, %q", code, stderr, want)
	}
	if l, err := net.InterfaceByName("ustack0"); err != nil || l.Flags&net.FlagUp != 0 {
		t.Errorf("the existing interface was touched: %+v %v", l, err)
	}
}

// TestWithoutPrivileges runs ustack up as nobody, and as root without
// capabilities (setpriv), and without /dev/net/tun (a private mount namespace
// hides it).
func TestWithoutPrivileges(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "setpriv")
	bin := ustackBinary(t)
	for _, tc := range []struct {
		name string
		argv []string
		want string
	}{
		{"as nobody", []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin, "up"},
			"ustack up needs CAP_NET_ADMIN: run it with sudo"},
		{"as root without capabilities", []string{"setpriv", "--inh-caps=-all", "--bounding-set=-all", bin, "up"},
			"ustack up needs CAP_NET_ADMIN: run it with sudo"},
		{"client as nobody", []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin, "client", "198.18.0.2:5000", "x"},
			"ustack client needs CAP_NET_ADMIN: run it with sudo"},
		{"no /dev/net/tun", []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", `mount -t tmpfs none /dev/net && exec "$0" up`, bin},
			"ustack up cannot open /dev/net/tun: load the tun module: sudo modprobe tun"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			needTool(t, tc.argv[0])
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := cmd.ProcessState.ExitCode()
			if code != 2 || !strings.HasPrefix(stderr.String(), tc.want) {
				t.Errorf("exit %d (%v), stderr %q; want 2 and %q", code, err, stderr.String(), tc.want)
			}
			if strings.Count(strings.TrimSpace(stderr.String()), "\n") > 0 {
				t.Errorf("error is not one line: %q", stderr.String())
			}
			assertOnlyLoopback(t)
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}} {
		stdout, _, code := runUstack(t, args...)
		if code != 0 || !strings.Contains(stdout, "ustack up") || !strings.Contains(stdout, "ustack client") {
			t.Errorf("ustack %v: exit %d, %q", args, code, stdout)
		}
	}
	for cmd, flags := range map[string][]string{
		"up":     {"--name name", "(default ustack0)", "--addr CIDR", "(default 198.18.0.1/24,fd75:7374:6163:6b::1/64)", "--stack-addr", "(default 198.18.0.2,fd75:7374:6163:6b::2)", "--mtu", "(default 1500)", "--port", "(default 5000)", "--no-ipv6", "--log-format", "(default text)", "--quiet", "--idle-timeout", "(default 5m0s)", "--max-conns", "(default 4096)"},
		"serve":  {"--kernel", "--listen", "(default :5000)", "--log-format", "--quiet"},
		"client": {"--kernel", "--via-name", "(default ustack1)", "--via-addr", "(default 198.18.1.1/24,fd75:7374:6163:6c::1/64)", "--via-stack-addr", "(default 198.18.1.2,fd75:7374:6163:6c::2)", "--timeout", "(default 10s)"},
	} {
		for _, args := range [][]string{{cmd, "--help"}, {"help", cmd}} {
			stdout, _, code := runUstack(t, args...)
			if code != 0 {
				t.Errorf("ustack %v: exit %d", args, code)
			}
			for _, f := range flags {
				if !strings.Contains(stdout, f) {
					t.Errorf("ustack %v does not list %q:\n%s", args, f, stdout)
				}
			}
		}
	}
}

func runUstack(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(ustackBinary(t), args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan struct{})
	go func() {
		cmd.Run()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("ustack %v hung", args)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// assertOnlyLoopback checks that nothing was left behind: the namespace has
// lo and nothing else but links the kernel makes itself.
func assertOnlyLoopback(t *testing.T) {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, "ustack") {
			t.Errorf("interface %s left behind", i.Name)
		}
	}
}
