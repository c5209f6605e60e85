package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ustack/ustack/tunif"
)

const benchAbout = `
Measures the kernel's TCP, ustack and gVisor's own TUN endpoint side by side,
in one run, with the same Go load generator on kernel sockets: bulk throughput
each way, 1-byte request/response latency (p50, p99) and rate (1 and 64
connections), new connections per second, the server process's CPU time per
GiB, and the userspace stacks' memory per idle connection.

Everything runs in private network namespaces that ustack bench makes
itself and that die with it (Ctrl-C included): nothing is created in the
namespace you run it from, and the load goes only between its namespaces.
The same apps (discard:9, chargen:19, echo:7) run on every variant, MTU 1500:
  kernel veth           ustack serve --kernel in a namespace of its own,
                        reached over a veth pair
  ustack                ustack up --serve ... on a TUN
  ustack --offload=off  the same, with ustack up --offload=off
  gVisor fdbased        gVisor's netstack with its defaults on gVisor's
                        fdbased endpoint over a TUN, as gVisor's TUN sample
                        and tun2socks run it: the reference peer
The variants are interleaved over --reps repetitions; the table gives the
median [min–max] of each, and each variant's median over the kernel's. Each
load loop is bounded in bytes and in seconds. --quick: one repetition with
small sizes, under a minute. Needs root (it makes namespaces and TUNs).`

// benchInnerEnv marks the copy of ustack bench that runs inside the private
// namespace the first one made for it (never set by a person).
const benchInnerEnv = "USTACK_BENCH_INNER"

// The bench's links. Every variant on a TUN has an interface and a /24 of the
// benchmarking range (RFC 2544) of its own (see benchVariants), so that they
// all run side by side; the veth pair to the kernel server takes
// 198.19.0.0/24. They exist only inside the bench's namespaces.
const (
	benchVethHost   = "bench-k0" // in the bench namespace
	benchVethServer = "bench-k1" // in the kernel server's namespace
	benchVethHostIP = "198.19.0.1/24"
	benchServerIP   = "198.19.0.2"
	benchServerCIDR = benchServerIP + "/24"
	benchMTU        = 1500
	benchServices   = "discard:9,chargen:19,echo:7"
	benchIdleConns  = 1000
	benchRRConns    = 64
)

// benchSizes bounds every load loop, in bytes or round trips and in time.
type benchSizes struct {
	bulkBytes int64         // per bulk transfer
	bulkTime  time.Duration // per bulk transfer
	rrCount   int           // round trips on one connection
	rrTime    time.Duration
	rate      time.Duration // the connection-rate and 64-connection loops
}

var (
	benchFull  = benchSizes{bulkBytes: 256 << 20, bulkTime: 5 * time.Second, rrCount: 20000, rrTime: 3 * time.Second, rate: 2 * time.Second}
	benchQuick = benchSizes{bulkBytes: 32 << 20, bulkTime: 2 * time.Second, rrCount: 2000, rrTime: time.Second, rate: time.Second}
)

// A benchMetric is one row of the table.
type benchMetric struct {
	key, name, unit string
	userspaceOnly   bool // the kernel has no process whose memory says it
}

var benchMetrics = []benchMetric{
	{key: "upload_gbps", name: "bulk upload (client → server)", unit: "Gbit/s"},
	{key: "download_gbps", name: "bulk download (server → client)", unit: "Gbit/s"},
	{key: "rr_p50_us", name: "request/response 1 B, p50", unit: "µs"},
	{key: "rr_p99_us", name: "request/response 1 B, p99", unit: "µs"},
	{key: "rr64_rate", name: "request/response 1 B, 64 connections", unit: "k/s"},
	{key: "conn_rate", name: "connections (connect, 1 B echo, close)", unit: "k/s"},
	{key: "cpu_upload_s_per_gib", name: "server process CPU, upload", unit: "s/GiB"},
	{key: "cpu_download_s_per_gib", name: "server process CPU, download", unit: "s/GiB"},
	{key: "idle_conn_kib", name: "memory per idle connection", unit: "KiB", userspaceOnly: true},
}

// benchNotes are printed under the table (and are the JSON's notes).
var benchNotes = []string{
	"gVisor fdbased: netstack's defaults (Reno, SACK, 1 MiB buffers), one packet per read(2) and write(2), no GSO and no checksum offload (a TUN without the virtio-net header), as gVisor's TUN sample and tun2socks run it",
	"server CPU of kernel veth leaves out the softirq work the kernel charges to the sender; memory per idle connection is the server process's growth, which the kernel's TCP has no process for",
}

// benchVariantSpec is one stack under test: the server process that runs the
// apps on it, and where the load generator finds them.
type benchVariantSpec struct {
	key, name string
	// kernel marks the baseline: the kernel's TCP over the veth pair, in
	// the kernel server's namespace. The ratios are to its medians.
	kernel bool
	// cmd is the server's subcommand with the flags that make the variant
	// (ustack up --offload=off); args adds the link and the apps.
	cmd []string
	// tun and hostCIDR are the TUN's name and the kernel's address on it
	// (none for kernel); addr is where the apps listen.
	tun, hostCIDR, addr string
}

// benchVariants are the variants, in the table's order. The first is the
// kernel, the baseline.
var benchVariants = []benchVariantSpec{
	{key: "kernel", name: "kernel veth", kernel: true, cmd: []string{"serve", "--kernel"}, addr: benchServerIP},
	{key: "ustack", name: "ustack", cmd: []string{"up"}, tun: "ubench0", hostCIDR: "198.18.0.1/24", addr: "198.18.0.2"},
	{key: "ustack_offload_off", name: "ustack --offload=off", cmd: []string{"up", "--offload=off"}, tun: "ubench1", hostCIDR: "198.18.1.1/24", addr: "198.18.1.2"},
	{key: "fdbased", name: "gVisor fdbased", cmd: []string{benchRefArg}, tun: benchRefTUN, hostCIDR: benchRefHost, addr: benchRefAddr},
}

// args is the server's command line; serverNs is the kernel server's
// namespace; profiles, when not empty, the directory for ustack's profiles.
func (v benchVariantSpec) args(serverNs, profiles string) []string {
	args := append(slices.Clone(v.cmd), "--quiet", "--serve", benchServices)
	if v.kernel {
		return append(args, "--netns", serverNs, "--listen", v.addr+":0")
	}
	args = append(args, "--name", v.tun, "--addr", v.hostCIDR, "--stack-addr", v.addr, "--no-ipv6", "--mtu", strconv.Itoa(benchMTU))
	if v.cmd[0] == "up" {
		// Stay root: the bench reads the process's CPU and memory. No
		// control socket: nothing talks to it.
		args = append(args, "--user", "root", "--control", "off")
		if profiles != "" {
			args = append(args, "--cpuprofile", filepath.Join(profiles, v.key+".cpu.pprof"), "--memprofile", filepath.Join(profiles, v.key+".heap.pprof"))
		}
	}
	return args
}

func runBench(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("bench", "sudo ustack bench [--reps N] [--quick] [--json]", benchAbout)
	var (
		reps     int
		quick    bool
		asJSON   bool
		profiles string
	)
	fs.IntVar(&reps, "reps", 5, "repetitions of each measurement, interleaved between the variants, 1..100 (--quick: 1)")
	fs.BoolVar(&quick, "quick", false, "one repetition with small sizes (32 MiB or 2 s per transfer): under a minute")
	fs.BoolVar(&asJSON, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&profiles, "profile", "", "write a CPU profile of each ustack variant's server over the whole run, and a heap profile when it stops, to `DIR`: VARIANT.cpu.pprof, VARIANT.heap.pprof, for go tool pprof")
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	if quick && !fs.isSet("reps") {
		reps = 1
	}
	if reps < 1 || reps > 100 {
		return usageErrorf("--reps %d: give 1..100 repetitions", reps)
	}
	if profiles != "" {
		if st, err := os.Stat(profiles); err != nil || !st.IsDir() {
			return usageErrorf("--profile %q: give an existing directory (mkdir it first)", profiles)
		}
	}
	if os.Getenv(benchInnerEnv) != "1" {
		if os.Geteuid() != 0 {
			return usageErrorf("ustack bench needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to make its namespaces: run it with sudo")
		}
		return benchReexec(ctx, env, args)
	}
	sizes := benchFull
	if quick {
		sizes = benchQuick
	}
	res, err := benchInNamespace(ctx, env, reps, sizes, profiles)
	if err != nil {
		return err
	}
	res.Quick = quick
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.printTable(env.Stdout)
	return nil
}

// benchReexec runs this program's ustack bench again in a new network
// namespace, which dies with it, and waits for it.
func benchReexec(ctx context.Context, env *Env, args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, append([]string{"bench"}, args...)...)
	cmd.Env = append(os.Environ(), benchInnerEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, env.Stdout, env.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) {
			return usageErrorf("ustack bench needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to make its namespaces: run it with sudo")
		}
		return fmt.Errorf("make the bench's network namespace: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case <-ctx.Done():
		// Ctrl-C from a terminal reached the copy too; a signal sent to
		// this process alone is passed on.
		cmd.Process.Signal(os.Interrupt)
		select {
		case werr = <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			werr = <-done
		}
	}
	var exit *exec.ExitError
	if errors.As(werr, &exit) {
		return &exitStatus{exit.ExitCode()} // the copy said why itself
	}
	return werr
}

// benchChild is a server process of the bench: ustack up or ustack serve.
type benchChild struct {
	name string
	cmd  *exec.Cmd
	errs tailBuffer
	done chan struct{}
}

// startBenchChild starts this program with args in the bench namespace; it
// is killed if the bench dies.
func startBenchChild(name string, args ...string) (*benchChild, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &benchChild{name: name, done: make(chan struct{})}
	c.cmd = exec.Command(self, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, benchInnerEnv+"=") {
			c.cmd.Env = append(c.cmd.Env, kv)
		}
	}
	c.cmd.Stdout, c.cmd.Stderr = io.Discard, &c.errs
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	return c, nil
}

// stop ends the child (SIGTERM, then SIGKILL after 5 s) and waits for it.
func (c *benchChild) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// failed describes why the child is gone, or is nil while it runs.
func (c *benchChild) failed() error {
	select {
	case <-c.done:
		return fmt.Errorf("%s exited (%v): %s", c.name, c.cmd.ProcessState, strings.TrimSpace(c.errs.String()))
	default:
		return nil
	}
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 4096 {
		b.buf = b.buf[len(b.buf)-4096:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// benchVariant is one stack under test with its running server.
type benchVariant struct {
	benchVariantSpec
	server *benchChild
}

// benchResults is what ustack bench prints (the JSON of --json).
type benchResults struct {
	Reps     int                `json:"reps"`
	Quick    bool               `json:"quick"`
	MTU      int                `json:"mtu"`
	Variants []benchVariantInfo `json:"variants"` // in the table's order, the baseline first
	Metrics  []benchRow         `json:"metrics"`
	Notes    []string           `json:"notes"`
	samples  map[string]map[string][]float64
}

type benchVariantInfo struct {
	Key      string `json:"key"`
	Name     string `json:"name"`
	Baseline bool   `json:"baseline,omitempty"` // the kernel: the ratios are to it
}

type benchRow struct {
	Key  string `json:"key"`
	Name string `json:"name"`
	Unit string `json:"unit"`
	// Values are by variant key; a variant the metric does not apply to
	// (the kernel, for memory) has none.
	Values map[string]*benchStats `json:"values"`
	// Ratios are by variant key: the variant's median over the baseline's.
	Ratios map[string]float64 `json:"ratios,omitempty"`
}

type benchStats struct {
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

func summarize(samples []float64) *benchStats {
	if len(samples) == 0 {
		return nil
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return &benchStats{Median: med, Min: s[0], Max: s[len(s)-1], Samples: samples}
}

// benchInNamespace sets up the variants in the private namespace this copy
// of ustack bench runs in, measures them and takes everything down again.
func benchInNamespace(ctx context.Context, env *Env, reps int, sizes benchSizes, profiles string) (_ *benchResults, err error) {
	// Refuse to run in the namespace the bench was started from: the
	// first copy must have made a new one.
	self, err1 := os.Readlink("/proc/self/ns/net")
	parent, err2 := os.Readlink("/proc/" + strconv.Itoa(os.Getppid()) + "/ns/net")
	if err1 != nil || err2 != nil || self == parent {
		return nil, usageErrorf("%s is set, but this is not a network namespace of ustack bench's own: run ustack bench without it", benchInnerEnv)
	}
	if err := benchSetupNetns(); err != nil {
		return nil, err
	}
	release, serverNs, err := holdNetns()
	if err != nil {
		return nil, err
	}
	defer release()
	if err := benchVeth(serverNs); err != nil {
		return nil, err
	}

	var variants []*benchVariant
	defer func() {
		// All at once: each may take its shutdown grace.
		var wg sync.WaitGroup
		for _, v := range variants {
			wg.Go(v.server.stop)
		}
		wg.Wait()
	}()
	for _, spec := range benchVariants {
		name := fmt.Sprintf("the server of %s (ustack %s)", spec.name, strings.Join(spec.cmd, " "))
		c, err := startBenchChild(name, spec.args(serverNs, profiles)...)
		if err != nil {
			return nil, err
		}
		variants = append(variants, &benchVariant{benchVariantSpec: spec, server: c})
	}
	for _, v := range variants {
		if err := v.waitReady(ctx); err != nil {
			return nil, err
		}
	}

	res := &benchResults{Reps: reps, MTU: benchMTU, samples: map[string]map[string][]float64{}}
	for _, v := range variants {
		res.Variants = append(res.Variants, benchVariantInfo{Key: v.key, Name: v.name, Baseline: v.kernel})
		res.samples[v.key] = map[string][]float64{}
	}
	prog := newProgress(env.Stderr)
	defer prog.done()
	for rep := 1; rep <= reps; rep++ {
		// Each repetition starts with the next variant, so that none
		// always runs first (on a cold cache) or right after another.
		k := (rep - 1) % len(variants)
		for _, v := range slices.Concat(variants[k:], variants[:k]) {
			step := func(what string) { prog.show(fmt.Sprintf("bench: rep %d/%d · %s · %s", rep, reps, v.name, what)) }
			if err := v.measure(ctx, rep, sizes, res.samples[v.key], step); err != nil {
				if ctx.Err() != nil {
					return nil, errors.New("interrupted; its namespaces and servers are gone")
				}
				if f := v.server.failed(); f != nil {
					err = fmt.Errorf("%v (%v)", err, f)
				}
				return nil, fmt.Errorf("%s: %w", v.name, err)
			}
		}
	}
	res.tabulate(variants)
	res.Notes = benchNotes
	return res, nil
}

// tabulate makes the rows of the table from the samples.
func (res *benchResults) tabulate(variants []*benchVariant) {
	var base string
	for _, v := range variants {
		if v.kernel {
			base = v.key
		}
	}
	for _, m := range benchMetrics {
		row := benchRow{Key: m.key, Name: m.name, Unit: m.unit, Values: map[string]*benchStats{}}
		for _, v := range variants {
			if s := summarize(res.samples[v.key][m.key]); s != nil {
				row.Values[v.key] = s
			}
		}
		b := row.Values[base]
		for _, v := range variants {
			if s := row.Values[v.key]; s != nil && v.key != base && b != nil && b.Median > 0 {
				if row.Ratios == nil {
					row.Ratios = map[string]float64{}
				}
				row.Ratios[v.key] = s.Median / b.Median
			}
		}
		res.Metrics = append(res.Metrics, row)
	}
}

// benchSetupNetns brings lo up in the bench namespace and widens its port
// range, so that the connection-rate loop does not run out of ports to
// TIME_WAIT (these sysctls belong to the namespace).
func benchSetupNetns() error {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("bring lo up in the bench namespace: %v", err)
	}
	for file, value := range map[string]string{
		"/proc/sys/net/ipv4/ip_local_port_range": "1024 65535",
		"/proc/sys/net/ipv4/tcp_tw_reuse":        "1",
	} {
		if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
			return fmt.Errorf("set %s in the bench namespace: %v", file, err)
		}
	}
	return nil
}

// benchVeth joins the bench namespace to the kernel server's with a veth
// pair.
func benchVeth(serverNs string) error {
	nsFile, err := os.Open(serverNs)
	if err != nil {
		return fmt.Errorf("open the kernel server's namespace: %v", err)
	}
	defer nsFile.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: benchVethHost, MTU: benchMTU},
		PeerName:      benchVethServer,
		PeerMTU:       benchMTU,
		PeerNamespace: netlink.NsFd(int(nsFile.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add the veth pair %s/%s: %v", benchVethHost, benchVethServer, err)
	}
	if err := benchLinkUp(benchVethHost, benchVethHostIP); err != nil {
		return err
	}
	return tunif.InNetns(serverNs, func() error {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			return fmt.Errorf("bring lo up in the kernel server's namespace: %v", err)
		}
		return benchLinkUp(benchVethServer, benchServerCIDR)
	})
}

func benchLinkUp(name, cidr string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %v", name, err)
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("address %s on %s: %v", cidr, name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: %v", name, err)
	}
	return nil
}

// waitReady waits up to 15 s for the variant's echo server to answer.
func (v *benchVariant) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := benchEcho(ctx, v.hostPort(7))
		if err == nil {
			return nil
		}
		if f := v.server.failed(); f != nil {
			return f
		}
		if ctx.Err() != nil {
			return errors.New("interrupted; its namespaces and servers are gone")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer on %s within 15 s: %v", v.name, v.hostPort(7), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (v *benchVariant) hostPort(port int) string { return net.JoinHostPort(v.addr, strconv.Itoa(port)) }

// measure takes one sample of every metric.
func (v *benchVariant) measure(ctx context.Context, rep int, sz benchSizes, out map[string][]float64, step func(string)) error {
	add := func(key string, x float64) { out[key] = append(out[key], x) }
	if !v.kernel && rep == 1 {
		// First, while the process has not yet grown heap for the other
		// loops to leave behind.
		step("memory per idle connection")
		kib, err := idleConnMemory(ctx, v.server.cmd.Process.Pid, v.hostPort(7))
		if err != nil {
			return fmt.Errorf("memory per idle connection: %w", err)
		}
		add("idle_conn_kib", kib)
	}
	pid := v.server.cmd.Process.Pid
	step("bulk upload")
	cpu0 := processCPU(pid)
	n, d, err := bulkUpload(ctx, v.hostPort(9), sz.bulkBytes, sz.bulkTime)
	if err != nil {
		return fmt.Errorf("bulk upload: %w", err)
	}
	add("upload_gbps", gbps(n, d))
	add("cpu_upload_s_per_gib", (processCPU(pid)-cpu0).Seconds()/(float64(n)/(1<<30)))

	step("bulk download")
	cpu0 = processCPU(pid)
	n, d, err = bulkDownload(ctx, v.hostPort(19), sz.bulkBytes, sz.bulkTime)
	if err != nil {
		return fmt.Errorf("bulk download: %w", err)
	}
	add("download_gbps", gbps(n, d))
	add("cpu_download_s_per_gib", (processCPU(pid)-cpu0).Seconds()/(float64(n)/(1<<30)))

	step("request/response")
	lat, err := requestResponse(ctx, v.hostPort(7), sz.rrCount, sz.rrTime)
	if err != nil {
		return fmt.Errorf("request/response: %w", err)
	}
	add("rr_p50_us", percentile(lat, 0.50))
	add("rr_p99_us", percentile(lat, 0.99))

	step("request/response, 64 connections")
	rate, err := manyRequestResponse(ctx, v.hostPort(7), benchRRConns, sz.rate)
	if err != nil {
		return fmt.Errorf("request/response on %d connections: %w", benchRRConns, err)
	}
	add("rr64_rate", rate/1000)

	step("connections per second")
	rate, err = connectionRate(ctx, v.hostPort(7), sz.rate)
	if err != nil {
		return fmt.Errorf("connections per second: %w", err)
	}
	add("conn_rate", rate/1000)
	return nil
}

func gbps(n int64, d time.Duration) float64 { return float64(n) * 8 / d.Seconds() / 1e9 }

// benchDial connects to addr; the connection is closed when ctx ends, which
// ends whatever loop uses it.
func benchDial(ctx context.Context, addr string) (*net.TCPConn, func(), error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return c.(*net.TCPConn), func() { stop(); c.Close() }, nil
}

// transfer calls move — a connection's Write or Read — with a 256 KiB buffer
// until max bytes have moved or the connection's deadline passed, and returns
// how many moved.
func transfer(move func([]byte) (int, error), max int64) (int64, error) {
	buf := make([]byte, 256<<10)
	var moved int64
	for moved < max {
		n, err := move(buf[:min(int64(len(buf)), max-moved)])
		moved += int64(n)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// bulkUpload sends to the discard server until max bytes or max time, then
// half-closes and waits for the server's close: the time is until the
// server has read every byte.
func bulkUpload(ctx context.Context, addr string, max int64, maxTime time.Duration) (int64, time.Duration, error) {
	c, done, err := benchDial(ctx, addr)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	start := time.Now()
	c.SetWriteDeadline(start.Add(maxTime))
	sent, err := transfer(c.Write, max)
	if err != nil {
		return 0, 0, err
	}
	if err := c.CloseWrite(); err != nil {
		return 0, 0, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		return 0, 0, fmt.Errorf("wait for the server to read it all: %w", err)
	}
	return sent, time.Since(start), nil
}

// bulkDownload reads from the chargen server until max bytes or max time.
func bulkDownload(ctx context.Context, addr string, max int64, maxTime time.Duration) (int64, time.Duration, error) {
	c, done, err := benchDial(ctx, addr)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	start := time.Now()
	c.SetReadDeadline(start.Add(maxTime))
	got, err := transfer(c.Read, max)
	if err != nil {
		return 0, 0, err
	}
	d := time.Since(start)
	if got == 0 {
		return 0, 0, errors.New("received nothing")
	}
	return got, d, nil
}

// requestResponse times 1-byte echo round trips on one connection, up to
// count of them or maxTime, and returns them in µs.
func requestResponse(ctx context.Context, addr string, count int, maxTime time.Duration) ([]float64, error) {
	c, done, err := benchDial(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer done()
	lat := make([]float64, 0, count)
	b := []byte{'x'}
	end := time.Now().Add(maxTime)
	c.SetDeadline(end.Add(5 * time.Second))
	for len(lat) < count && time.Now().Before(end) {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, err
		}
		lat = append(lat, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	return lat, nil
}

func percentile(x []float64, p float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	s := slices.Clone(x)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// manyRequestResponse runs 1-byte echo round trips on conns connections at
// once for d, and returns round trips per second.
func manyRequestResponse(ctx context.Context, addr string, conns int, d time.Duration) (float64, error) {
	var cs []*net.TCPConn
	for range conns {
		c, done, err := benchDial(ctx, addr)
		if err != nil {
			return 0, err
		}
		defer done()
		cs = append(cs, c)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		first error
	)
	start := time.Now()
	end := start.Add(d)
	for _, c := range cs {
		wg.Go(func() {
			b := []byte{'x'}
			n := 0
			c.SetDeadline(end.Add(5 * time.Second))
			var err error
			for time.Now().Before(end) {
				if _, err = c.Write(b); err != nil {
					break
				}
				if _, err = io.ReadFull(c, b); err != nil {
					break
				}
				n++
			}
			mu.Lock()
			total += n
			if first == nil {
				first = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// connectionRate opens connections one after another for d, each carrying
// a 1-byte echo before the client closes it, and returns them per second.
func connectionRate(ctx context.Context, addr string, d time.Duration) (float64, error) {
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		if err := benchEcho(ctx, addr); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// benchEcho connects, echoes 1 byte and closes.
func benchEcho(ctx context.Context, addr string) error {
	c, done, err := benchDial(ctx, addr)
	if err != nil {
		return err
	}
	defer done()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b := []byte{'x'}
	if _, err := c.Write(b); err != nil {
		return err
	}
	_, err = io.ReadFull(c, b)
	return err
}

// idleConnMemory opens benchIdleConns connections to the echo server, each
// established by a 1-byte round trip, and returns how much the server's
// resident memory grew per connection, in KiB.
func idleConnMemory(ctx context.Context, pid int, addr string) (float64, error) {
	before, err := processRSS(pid)
	if err != nil {
		return 0, err
	}
	var closers []func()
	defer func() {
		for _, f := range closers {
			f()
		}
	}()
	b := []byte{'x'}
	for range benchIdleConns {
		c, done, err := benchDial(ctx, addr)
		if err != nil {
			return 0, err
		}
		closers = append(closers, done)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(b); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, err
		}
	}
	after, err := processRSS(pid)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / benchIdleConns / 1024, nil
}

// processCPU sums the time every thread of pid has run, from
// /proc/PID/task/*/schedstat (nanoseconds, where /proc/PID/stat counts
// 10 ms ticks). Threads that have ended are not counted; Go's rarely end.
func processCPU(pid int) time.Duration {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

// progress is the line on stderr saying what runs: rewritten in place on a
// terminal, one line per step otherwise.
type progress struct {
	w    io.Writer
	tty  bool
	used bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progress) show(s string) {
	p.used = true
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", s)
		return
	}
	fmt.Fprintln(p.w, s)
}

func (p *progress) done() {
	if p.tty && p.used {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// printTable prints a column per variant, each but the baseline's followed by
// its ratio to the baseline ("/kernel").
func (r *benchResults) printTable(w io.Writer) {
	fmt.Fprintf(w, "ustack bench: %d repetition(s), MTU %d, median [min–max]; /kernel: the variant's median over the kernel's\n\n", r.Reps, r.MTU)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"metric", "unit"}
	for _, v := range r.Variants {
		head = append(head, v.Name)
		if !v.Baseline {
			head = append(head, "/kernel")
		}
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, m := range r.Metrics {
		cells := []string{m.Name, m.Unit}
		for _, v := range r.Variants {
			cells = append(cells, m.Values[v.Key].String())
			if !v.Baseline {
				ratio := "—"
				if x, ok := m.Ratios[v.Key]; ok {
					ratio = fmt.Sprintf("%.2f×", x)
				}
				cells = append(cells, ratio)
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, n := range r.Notes {
		fmt.Fprintln(w, n)
	}
}

func (s *benchStats) String() string {
	if s == nil {
		return "—"
	}
	if len(s.Samples) == 1 {
		return num(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", num(s.Median), num(s.Min), num(s.Max))
}

// num prints x with three significant digits or so.
func num(x float64) string {
	switch a := math.Abs(x); {
	case a >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(x, 'f', 2, 64)
	default:
		return strconv.FormatFloat(x, 'f', 3, 64)
	}
}
