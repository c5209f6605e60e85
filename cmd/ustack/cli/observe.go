package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ustack/ustack/cmd/ustack/webui"
	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/fault"
	"github.com/ustack/ustack/stack/probe"
	"github.com/ustack/ustack/stack/tap"
	"github.com/ustack/ustack/stack/trace"
)

// Queue lengths of the taps, in events. A tap that falls further behind than
// this loses events (counted, shown in ustack stats and the exit summary)
// rather than slow the stack down.
const (
	traceQueue = 8192
	pcapQueue  = 16384
	probeQueue = 16384
	uiQueue    = 16384
)

// traceSnap is how much of each packet the trace needs: the headers (IPv6
// with extension headers, TCP with options) and its payload preview.
const traceSnap = 256

// traceMode is the value of --trace: a boolean flag that also takes
// =verbose.
type traceMode string

const (
	traceOff     traceMode = ""
	traceOn      traceMode = "on"
	traceVerbose traceMode = "verbose"
	traceLadder  traceMode = "ladder"
)

func (m *traceMode) String() string {
	if *m == traceOff {
		return ""
	}
	return string(*m)
}

func (m *traceMode) Set(s string) error {
	switch strings.ToLower(s) {
	case "true", "on", "1":
		*m = traceOn
	case "verbose":
		*m = traceVerbose
	case "ladder":
		*m = traceLadder
	case "false", "off", "0":
		*m = traceOff
	default:
		return fmt.Errorf("%q: give --trace (one line a packet), --trace=verbose (with every header field) or --trace=ladder (a sequence diagram)", s)
	}
	return nil
}

// IsBoolFlag lets --trace stand alone.
func (*traceMode) IsBoolFlag() bool { return true }

// observeFlags are the taps of `up` and `client`: what a person can watch.
type observeFlags struct {
	trace       traceMode
	traceFilter string
	pcap        string
	pcapMax     byteSize
	probe       string
	metrics     string
	control     string
	ui          string
	iface       string // the interface's name, for the web view's header

	filter *trace.Filter // parsed from traceFilter by check
}

func (o *observeFlags) register(fs *flagSet) {
	fs.Var(&o.trace, "trace", "print one line per packet in and out, decoded layer by layer (IP, TCP/UDP/ICMP) with the handshake, data, ACKs, retransmissions and the stack's TCP state; --trace=verbose adds every header field; --trace=ladder draws the packets as a ladder (sequence) diagram between the kernel's side and the stack's, one arrow a packet")
	fs.StringVar(&o.traceFilter, "trace-filter", "", "trace only packets that match `EXPR`, like tcpdump: port 5000, icmp, host 198.18.0.1, tcp and not port 22 (and, or, not, parentheses)")
	fs.StringVar(&o.pcap, "pcap", "", "write every packet the stack sends and receives to `FILE` as pcap, for Wireshark or tcpdump -r; - writes to stdout (the ready lines and trace then go to stderr)")
	fs.Var(&o.pcapMax, "pcap-max-bytes", "when the pcap file reaches `SIZE` (like 100M), move it to FILE.1 (replacing the previous one) and start again; 0: no limit")
	fs.StringVar(&o.probe, "tcp-probe", "", "record each TCP connection's cwnd, ssthresh, RTT and retransmissions after every segment to `FILE.csv` (draw it with ustack plot)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on `ADDR:PORT` (like 127.0.0.1:9100) at /metrics; reachable by whoever can reach that address")
	fs.StringVar(&o.ui, "ui", "", "serve the live web view on `ADDR:PORT` (a bare PORT or :PORT means 127.0.0.1:PORT): every connection as a ladder diagram, its TCP state machine, cwnd and RTT, the counters of each layer. It listens on loopback unless you name another address, like 0.0.0.0:8080 — then whoever reaches it sees your packets' headers and payload previews")
	fs.StringVar(&o.control, "control", "", "the control `SOCKET` that ustack stats reads (default $USTACK_RUN_DIR/NAME.sock, $USTACK_RUN_DIR defaulting to "+defaultRunDir+"); off: none")
}

// check validates the flags before anything is created.
func (o *observeFlags) check(name, nsName string) error {
	o.iface = name
	if o.traceFilter != "" {
		if o.trace == traceOff {
			return usageErrorf("--trace-filter needs --trace: add --trace (or --trace=verbose)")
		}
		f, err := trace.ParseFilter(o.traceFilter)
		if err != nil {
			return usageErrorf("--trace-filter: %v", err)
		}
		o.filter = f
	}
	if o.pcapMax > 0 && (o.pcap == "" || o.pcap == "-") {
		return usageErrorf("--pcap-max-bytes needs --pcap FILE (a file, not stdout)")
	}
	if o.pcap != "" && o.pcap == o.probe {
		return usageErrorf("--pcap and --tcp-probe name the same file %q: give each its own", o.pcap)
	}
	if o.probe == "-" {
		return usageErrorf("--tcp-probe needs a file name, not -")
	}
	if o.metrics != "" {
		if _, _, err := net.SplitHostPort(o.metrics); err != nil {
			return usageErrorf("--metrics %q: give ADDR:PORT, like 127.0.0.1:9100", o.metrics)
		}
	}
	if o.ui != "" {
		addr, err := uiAddr(o.ui)
		if err != nil {
			return usageErrorf("--ui %q: %v", o.ui, err)
		}
		o.ui = addr
	}
	if o.control == "" {
		o.control = controlPath(name, nsName)
	}
	return nil
}

// uiAddr completes --ui's address: loopback unless a host is named.
func uiAddr(s string) (string, error) {
	if !strings.Contains(s, ":") {
		s = ":" + s
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("give ADDR:PORT, like 127.0.0.1:8080 (%v)", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("port %q is not a number from 0 to 65535: give ADDR:PORT, like 127.0.0.1:8080", port)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// textOut is where the ready lines, the trace and the exit summary go:
// stdout, unless the pcap stream has it.
func (o *observeFlags) textOut(env *Env) io.Writer {
	if o.pcap == "-" {
		return env.Stderr
	}
	return env.Stdout
}

// observers are the running taps of one stack, and the control socket and
// metrics server that read its counters.
type observers struct {
	log     *slog.Logger
	flags   *observeFlags
	out     io.Writer
	pcap    *pcapFile
	probe   *os.File
	control *controlServer
	metrics *metricsServer
	ui      *webui.Server
	stack   atomic.Pointer[stack.Stack]

	taps []*tapRunner
	wg   sync.WaitGroup
}

// tapRunner is one consumer goroutine and its counters.
type tapRunner struct {
	name    string
	events  atomic.Uint64
	dropped func() uint64
	stop    func()
}

// open opens the files the flags ask for, before the interface exists, so
// that a bad path fails before anything was made.
func (o *observeFlags) open(env *Env, log *slog.Logger) (_ *observers, err error) {
	obs := &observers{log: log, flags: o, out: o.textOut(env)}
	// A reader of stdout that goes away (ustack up --trace | head) must
	// make the write fail — which switches that tap off — rather than the
	// signal end the stack.
	signal.Ignore(syscall.SIGPIPE)
	defer func() {
		if err != nil {
			obs.close()
		}
	}()
	if o.pcap != "" {
		if obs.pcap, err = openPcap(o.pcap, env.Stdout, int64(o.pcapMax)); err != nil {
			return nil, usageErrorf("--pcap: %v", err)
		}
	}
	if o.probe != "" {
		if obs.probe, err = os.Create(o.probe); err != nil {
			return nil, usageErrorf("--tcp-probe: %v", err)
		}
	}
	return obs, nil
}

// listen creates the control socket and the metrics listener. It comes after
// the interface exists: without the privileges for the interface, that is
// the error to report, not the socket's.
func (obs *observers) listen() (err error) {
	o := obs.flags
	if o.control != "off" {
		if obs.control, err = listenControl(o.control, obs.snapshot, obs.setFaults); err != nil {
			return err
		}
	}
	if o.metrics != "" {
		if obs.metrics, err = listenMetrics(o.metrics, obs.snapshot); err != nil {
			return usageErrorf("--metrics: %v", err)
		}
	}
	if o.ui != "" {
		obs.ui = webui.New(webui.Info{Version: buildVersion(), Iface: o.iface}, obs.snapshot, obs.uiLost, obs.log)
		if err = obs.ui.Listen(o.ui); err != nil {
			obs.ui = nil
			return usageErrorf("--ui: %v", err)
		}
		if host, _, _ := net.SplitHostPort(o.ui); !isLoopback(host) {
			obs.log.Warn(fmt.Sprintf("the web view listens on %s, not on loopback: whoever reaches it sees the headers and the first bytes of every packet", obs.ui.Addr()))
		}
	}
	return nil
}

// isLoopback tells whether host names only this machine: a loopback address
// or localhost.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// uiLost is how many events the web view's taps lost.
func (obs *observers) uiLost() uint64 {
	var n uint64
	for _, r := range obs.taps {
		if strings.HasPrefix(r.name, "ui") {
			n += r.dropped()
		}
	}
	return n
}

// attach subscribes the taps to st's buses and starts their goroutines.
func (obs *observers) attach(st *stack.Stack) {
	obs.stack.Store(st)
	packets := st.Link().Packets()
	if obs.flags.trace != traceOff {
		tr := trace.New(trace.Options{Verbose: obs.flags.trace == traceVerbose, Filter: obs.flags.filter})
		w := &lineWriter{w: obs.out}
		handle := func(p tap.Packet) error {
			if line, ok := tr.Line(p); ok {
				return w.line(line)
			}
			return nil
		}
		if obs.flags.trace == traceLadder {
			handle = func(p tap.Packet) error {
				head, line, ok := tr.LadderLine(p)
				if !ok {
					return nil
				}
				if head != "" {
					if err := w.line(head); err != nil {
						return err
					}
				}
				return w.line(line)
			}
		}
		run(obs, "trace", packets.Subscribe(traceQueue, traceSnap), handle, w.flush)
	}
	if obs.pcap != nil {
		run(obs, "pcap", packets.Subscribe(pcapQueue, 0), func(p tap.Packet) error {
			if p.Drop != "" {
				return nil // fault injection dropped it: it never crossed
			}
			return obs.pcap.write(p)
		}, obs.pcap.flush)
	}
	if obs.probe != nil {
		rec := newProbeRecorder(probe.NewWriter(obs.probe))
		// The recorder needs both: the samples for the congestion state,
		// the packets to see which segments were retransmitted.
		run(obs, "tcp-probe", st.Samples().Subscribe(probeQueue, 0), rec.sample, rec.flush)
		run(obs, "tcp-probe packets", packets.Subscribe(probeQueue, traceSnap), rec.packet, rec.flush)
	}
	if obs.ui != nil {
		obs.ui.SetAddrs(st.Addrs())
		run(obs, "ui packets", packets.Subscribe(uiQueue, traceSnap), func(p tap.Packet) error { obs.ui.Packet(p); return nil }, noFlush)
		run(obs, "ui samples", st.Samples().Subscribe(uiQueue, 0), func(x stack.TCPSample) error { obs.ui.Sample(x); return nil }, noFlush)
	}
	// Last: a stats request or a scrape reads the taps' list.
	if obs.control != nil {
		obs.control.serve(obs.log)
	}
	if obs.metrics != nil {
		obs.metrics.serve(obs.log)
	}
	if obs.ui != nil {
		obs.ui.Serve()
	}
}

func noFlush() error { return nil }

// lineWriter gathers whole trace lines and hands them to w in one Write each
// time it is flushed or has gathered 32 KiB, so that a line is never cut by
// another writer of the same stream (the ready lines, the summary).
type lineWriter struct {
	w   io.Writer
	buf []byte
}

func (l *lineWriter) line(s string) error {
	l.buf = append(append(l.buf, s...), '\n')
	if len(l.buf) >= 32<<10 {
		return l.flush()
	}
	return nil
}

func (l *lineWriter) flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	_, err := l.w.Write(l.buf)
	l.buf = l.buf[:0]
	return err
}

// run starts a consumer of sub: handle for each event, flush whenever the
// queue runs empty and at the end. When handle fails, the tap is switched off
// with one log line; the stack runs on.
func run[E any](obs *observers, name string, sub *tap.Sub[E], handle func(E) error, flush func() error) {
	r := &tapRunner{name: name, dropped: sub.Dropped}
	done := make(chan struct{})
	r.stop = func() { sub.Close(); close(done) }
	obs.taps = append(obs.taps, r)
	obs.wg.Add(1)
	go func() {
		defer obs.wg.Done()
		failed := false
		fail := func(err error) {
			if err != nil && !failed {
				failed = true
				sub.Close()
				obs.log.Error(fmt.Sprintf("%s: %v: this tap is off from now on; the stack runs on", name, err))
			}
		}
		consume := func(e E) {
			if failed {
				return
			}
			r.events.Add(1)
			fail(handle(e))
		}
		for {
			select {
			case e := <-sub.C():
				consume(e)
				if len(sub.C()) == 0 && !failed {
					fail(flush())
				}
			case <-done:
				for {
					select {
					case e := <-sub.C():
						consume(e)
					default:
						if !failed {
							fail(flush())
						}
						return
					}
				}
			}
		}
	}()
}

// close stops the taps after the last packet was published (call it after the
// stack is closed), flushes and closes their files, and stops the control and
// metrics servers. Safe on a partly opened set.
func (obs *observers) close() error {
	for _, r := range obs.taps {
		r.stop()
	}
	obs.wg.Wait()
	var errs []error
	if obs.pcap != nil {
		errs = append(errs, obs.pcap.close())
	}
	if obs.probe != nil {
		errs = append(errs, obs.probe.Close())
	}
	if obs.control != nil {
		errs = append(errs, obs.control.close())
	}
	if obs.metrics != nil {
		errs = append(errs, obs.metrics.close())
	}
	if obs.ui != nil {
		errs = append(errs, obs.ui.Close())
	}
	return errors.Join(errs...)
}

// setFaults changes the faults of the running stack.
func (obs *observers) setFaults(cfg fault.Config) (string, error) {
	st := obs.stack.Load()
	if st == nil {
		return "", errors.New("the stack is not up yet")
	}
	if err := st.Link().SetFaults(cfg); err != nil {
		return "", err
	}
	now := "no faults"
	if j := st.Link().Faults(); j != nil {
		now = j.Config().String()
	}
	obs.log.Info("faults now: " + now)
	return now, nil
}

// snapshot is the stack's counters with the taps'.
func (obs *observers) snapshot() (*stack.Snapshot, error) {
	st := obs.stack.Load()
	if st == nil {
		return nil, errors.New("the stack is not up yet")
	}
	snap := st.Snapshot()
	snap.Process = processInfo()
	for _, r := range obs.taps {
		snap.Taps = append(snap.Taps, stack.TapCounters{Name: r.name, Events: r.events.Load(), Dropped: r.dropped()})
	}
	return snap, nil
}
