package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/fault"
	"github.com/ustack/ustack/tunif"
)

const statsAbout = `
Prints the counters of a running ustack (up or client), read over its control
socket: packets and bytes in and out per layer (link, IPv4, IPv6, ICMP, TCP,
UDP), TCP opens, retransmissions and timeouts, every drop with its reason, the
taps, and a line per TCP connection like ss -ti (state, cwnd, ssthresh, srtt,
retransmissions, queues). --watch repeats it. The socket is root's (and, with
up --user, that user's): run it with sudo.`

func runStats(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("stats", "sudo ustack stats [--name ustack0] [--json] [--watch 1s]", statsAbout)
	var (
		name    string
		nsName  string
		control string
		asJSON  bool
		watch   time.Duration
	)
	fs.StringVar(&name, "name", tunif.DefaultName, "`name` of the running ustack's interface")
	fs.StringVar(&nsName, "netns", "", "the network `NAMESPACE` the running ustack's interface is in, as its --netns said")
	fs.StringVar(&control, "control", "", "the control `SOCKET` to read (default $USTACK_RUN_DIR/NAME.sock, $USTACK_RUN_DIR defaulting to "+defaultRunDir+")")
	fs.BoolVar(&asJSON, "json", false, "print JSON (one object per line with --watch) instead of text")
	fs.DurationVar(&watch, "watch", 0, "print again every `INTERVAL` (like 1s) until Ctrl-C")
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	if watch < 0 || (watch > 0 && watch < 10*time.Millisecond) {
		return usageErrorf("--watch %v: give an interval of at least 10ms, like 1s", watch)
	}
	if control == "" {
		if err := (tunif.Config{Name: name, MTU: tunif.DefaultMTU}).Validate(); err != nil {
			return usageErrorf("--name: %v", err)
		}
		control = controlPath(name, nsName)
	}
	clear := watch > 0 && !asJSON && isTerminal(env.Stdout)
	var tick <-chan time.Time
	if watch > 0 {
		t := time.NewTicker(watch)
		defer t.Stop()
		tick = t.C
	}
	for {
		resp, err := askControl(ctx, control, controlRequest{Op: "stats"})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if asJSON {
			if err := json.NewEncoder(env.Stdout).Encode(resp.Stats); err != nil {
				return err
			}
		} else {
			if clear {
				fmt.Fprint(env.Stdout, "\x1b[H\x1b[2J")
			}
			writeSnapshot(env.Stdout, name, resp.Stats, true)
		}
		if watch == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// writeSnapshot prints a snapshot on one screen: a line per layer, the drops,
// the taps and, with conns, a line per TCP connection.
func writeSnapshot(w io.Writer, name string, s *stack.Snapshot, conns bool) {
	l := s.Link
	fmt.Fprintf(w, "%s at %s\n", name, s.Time.Format("15:04:05"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "link\tin %d packets, %s (IPv4 %d, IPv6 %d)\tout %d packets, %s (IPv4 %d, IPv6 %d)\n",
		l.RxPackets, bytesString(l.RxBytes), l.RxIPv4Packets, l.RxIPv6Packets,
		l.TxPackets, bytesString(l.TxBytes), l.TxIPv4Packets, l.TxIPv6Packets)
	if l.Offload {
		// A superpacket is one packet above; here, what it stood for.
		fmt.Fprintf(tw, "offload\tin %d superpackets, %d wire segments in all\tout %d superpackets, %d wire segments in all\n",
			l.RxSuperpackets, l.RxSegments, l.TxSuperpackets, l.TxSegments)
	}
	for _, v := range []struct {
		name           string
		c              stack.IPCounters
		rxBytes, txByt uint64
	}{{"ipv4", s.IPv4, l.RxIPv4Bytes, l.TxIPv4Bytes}, {"ipv6", s.IPv6, l.RxIPv6Bytes, l.TxIPv6Bytes}} {
		fmt.Fprintf(tw, "%s\tin %d, %s, delivered up %d\tout %d, %s\n", v.name, v.c.PacketsReceived, bytesString(v.rxBytes), v.c.PacketsDelivered, v.c.PacketsSent, bytesString(v.txByt))
	}
	fmt.Fprintf(tw, "by protocol\tin: tcp %d/%s, udp %d/%s, icmp %d/%s, other %d\tout: tcp %d/%s, udp %d/%s, icmp %d/%s, other %d\n",
		l.Rx.TCP.Packets, bytesString(l.Rx.TCP.Bytes), l.Rx.UDP.Packets, bytesString(l.Rx.UDP.Bytes), l.Rx.ICMP.Packets, bytesString(l.Rx.ICMP.Bytes), l.Rx.Other.Packets,
		l.Tx.TCP.Packets, bytesString(l.Tx.TCP.Bytes), l.Tx.UDP.Packets, bytesString(l.Tx.UDP.Bytes), l.Tx.ICMP.Packets, bytesString(l.Tx.ICMP.Bytes), l.Tx.Other.Packets)
	c := s.ICMP
	fmt.Fprintf(tw, "icmp\tin %d (echo requests %d)\tout %d (echo replies %d)\n",
		c.V4In+c.V6In, c.V4EchoRequestsIn+c.V6EchoRequestsIn, c.V4Out+c.V6Out, c.V4EchoRepliesOut+c.V6EchoRepliesOut)
	t := s.TCP
	fmt.Fprintf(tw, "tcp\tin %d segments\tout %d segments\n", t.SegmentsIn, t.SegmentsOut)
	fmt.Fprintf(tw, "\topens: %d active, %d passive, %d failed\testablished now: %d\n", t.ActiveOpens, t.PassiveOpens, t.FailedAttempts, t.Established)
	fmt.Fprintf(tw, "\tretransmits: %d (fast %d), timeouts %d\tresets: in %d, out %d\n", t.Retransmits, t.FastRetransmits, t.Timeouts, t.ResetsIn, t.ResetsOut)
	fmt.Fprintf(tw, "udp\tin %d datagrams\tout %d datagrams\n", s.UDP.DatagramsIn, s.UDP.DatagramsOut)
	if len(s.Drops) == 0 {
		fmt.Fprintf(tw, "drops\tnone\n")
	}
	for i, d := range s.Drops {
		label := ""
		if i == 0 {
			label = "drops"
		}
		fmt.Fprintf(tw, "%s\t%s: %s\t%d\n", label, d.Layer, d.Reason, d.Count)
	}
	for i, tp := range s.Taps {
		label := ""
		if i == 0 {
			label = "taps"
		}
		fmt.Fprintf(tw, "%s\t%s: %d events\t%d skipped (fell behind)\n", label, tp.Name, tp.Events, tp.Dropped)
	}
	if p := s.Process; p != nil {
		fmt.Fprintf(tw, "process\tpid %d, %d goroutines, %d fds\tRSS %s, heap %s, %d netstack endpoints\n",
			p.PID, p.Goroutines, p.FDs, bytesString(p.RSSBytes), bytesString(p.HeapBytes), s.Endpoints)
	}
	if f := s.Forward; f != nil {
		for _, v := range []struct {
			name string
			c    stack.FlowStats
		}{{"tcp", f.TCP}, {"udp", f.UDP}} {
			fmt.Fprintf(tw, "forward\t%s: %d flows opened, %d active\trefused: %d not allowed, %d dial failed, %d over the limit; %s out, %s in\n",
				v.name, v.c.Opened, v.c.Active, v.c.NotAllowed, v.c.DialFailed, v.c.OverLimit, bytesString(v.c.BytesOut), bytesString(v.c.BytesIn))
		}
	}
	if f := s.Faults; f != nil {
		fmt.Fprintf(tw, "faults\t%s\t\n", f.Settings)
		for _, d := range []struct {
			name string
			c    fault.DirStats
		}{{"in", f.Stats.In}, {"out", f.Stats.Out}} {
			c := d.c
			fmt.Fprintf(tw, "\t%s: %d packets: %d lost, %d corrupted, %d duplicated, %d reordered, %d delayed\trate: %d queued, %d dropped; %d held now\n",
				d.name, c.Packets, c.Lost, c.Corrupted, c.Duplicated, c.Reordered, c.Delayed, c.RateQueued, c.RateDropped, c.HeldNow)
		}
	}
	tw.Flush()
	if !conns {
		return
	}
	fmt.Fprintln(w)
	if len(s.Conns) == 0 {
		fmt.Fprintln(w, "no TCP connections")
		return
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "local\tremote\tstate\tcwnd\tssthresh\tsrtt\trttvar\trto\tsegs in/out\tretrans\tacked\trecv-q/buf\tsend-q/buf")
	for _, c := range s.Conns {
		acked := "-"
		if c.BytesAcked != nil {
			acked = bytesString(*c.BytesAcked)
		}
		if c.State == "LISTEN" {
			fmt.Fprintf(tw, "%s\t*\tLISTEN\t-\t-\t-\t-\t-\t%d/%d\t-\t-\t-\t-\n", c.Local, c.SegmentsIn, c.SegmentsOut)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%d/%d\t%d/%d\n",
			c.Local, c.Remote, c.State, c.Cwnd, ssthreshString(c.Ssthresh), durString(c.SRTT), durString(c.RTTVar), durString(c.RTO),
			c.SegmentsIn, c.SegmentsOut, c.Retransmits, acked, c.RecvQueued, c.RecvBuf, max(c.SendQueued, 0), c.SendBuf)
	}
	tw.Flush()
}

// ssthreshString shows netstack's initial "infinite" ssthresh as "-".
func ssthreshString(v uint32) string {
	if v >= 1<<30 {
		return "-"
	}
	return strconv.FormatUint(uint64(v), 10)
}

func durString(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(10 * time.Microsecond).String()
}

func bytesString(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// byteSize is a flag of a size in bytes: 1000, 64K, 100M, 2G (K = 1024).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	t := strings.TrimSpace(s)
	mult := int64(1)
	upper := strings.ToUpper(t)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(upper, u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size: give bytes, like 1000000, 64K, 100M or 2G", s)
	}
	*b = byteSize(n * mult)
	return nil
}
