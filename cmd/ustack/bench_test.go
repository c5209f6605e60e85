package main

// ustack bench, end to end: the real binary in the test's private namespace,
// making its own namespaces inside it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// benchJSON is the part of ustack bench --json the test reads.
type benchJSON struct {
	Reps     int  `json:"reps"`
	Quick    bool `json:"quick"`
	Variants []struct {
		Key      string `json:"key"`
		Name     string `json:"name"`
		Baseline bool   `json:"baseline"`
	} `json:"variants"`
	Metrics []struct {
		Key    string                     `json:"key"`
		Values map[string]*benchJSONStats `json:"values"`
		Ratios map[string]float64         `json:"ratios"`
	} `json:"metrics"`
	Notes []string `json:"notes"`
}

// benchVariantNames are the variants ustack bench measures, the baseline
// first.
var benchVariantNames = []string{"kernel veth", "ustack", "ustack --offload=off", "gVisor fdbased"}

type benchJSONStats struct {
	Median, Min, Max float64
	Samples          []float64
}

// TestBenchQuick runs ustack bench --quick --json and checks that every
// metric was measured for every variant, with a ratio to the kernel for each
// other one, and that nothing is left behind.
func TestBenchQuick(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "ip")
	linksBefore, err := exec.Command("ip", "-o", "link").Output()
	if err != nil {
		t.Fatalf("ip link: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ustackBinary(t), "bench", "--quick", "--json")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ustack bench --quick --json: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	t.Logf("ustack bench --quick took %v", time.Since(start).Round(time.Millisecond))
	for _, v := range benchVariantNames {
		if line := "bench: rep 1/1 · " + v + " · bulk upload"; !strings.Contains(stderr.String(), line) {
			t.Errorf("no progress line %q on stderr:\n%s", line, stderr.String())
		}
	}

	var res benchJSON
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	var names []string
	for i, v := range res.Variants {
		names = append(names, v.Name)
		if v.Baseline != (i == 0) {
			t.Errorf("variant %d %q: baseline %v; want the kernel, first, and only it", i, v.Name, v.Baseline)
		}
	}
	if res.Reps != 1 || !res.Quick || !slices.Equal(names, benchVariantNames) {
		t.Errorf("reps %d, quick %v, variants %q: want 1, true and %q", res.Reps, res.Quick, names, benchVariantNames)
	}
	wantKeys := []string{"upload_gbps", "download_gbps", "rr_p50_us", "rr_p99_us", "rr64_rate", "conn_rate", "cpu_upload_s_per_gib", "cpu_download_s_per_gib", "idle_conn_kib"}
	seen := map[string]bool{}
	for _, m := range res.Metrics {
		seen[m.Key] = true
		userspaceOnly := m.Key == "idle_conn_kib"
		for _, v := range res.Variants {
			s := m.Values[v.Key]
			if v.Baseline && userspaceOnly {
				if s != nil {
					t.Errorf("%s: a kernel value %+v for a userspace-only metric", m.Key, s)
				}
				continue
			}
			if s == nil || !(s.Median > 0) || len(s.Samples) != 1 {
				t.Errorf("%s, %s: %+v, want one positive sample", m.Key, v.Name, s)
			}
			if r, ok := m.Ratios[v.Key]; v.Baseline || userspaceOnly {
				if ok {
					t.Errorf("%s, %s: a ratio %v where there is no kernel value to divide by", m.Key, v.Name, r)
				}
			} else if s != nil && !(r > 0 && r == s.Median/m.Values[res.Variants[0].Key].Median) {
				t.Errorf("%s, %s: ratio %v (present: %v), want its median over the kernel's", m.Key, v.Name, r, ok)
			}
		}
	}
	for _, k := range wantKeys {
		if !seen[k] {
			t.Errorf("metric %s missing from\n%s", k, out)
		}
	}
	if len(res.Notes) == 0 || !strings.Contains(res.Notes[0], "gVisor fdbased: netstack's defaults") {
		t.Errorf("notes %q: want the line that says how the reference peer runs", res.Notes)
	}

	// Everything was made in the bench's own namespaces: nothing new here.
	linksAfter, err := exec.Command("ip", "-o", "link").Output()
	if err != nil {
		t.Fatalf("ip link: %v", err)
	}
	if string(linksAfter) != string(linksBefore) {
		t.Errorf("ip link changed in the test's namespace:\nbefore:\n%s\nafter:\n%s", linksBefore, linksAfter)
	}
}

// TestBenchRefuses checks bad flags and a user without privileges: exit 2,
// a clear line, no namespace made.
func TestBenchRefuses(t *testing.T) {
	netnstest.Require(t)
	cases := []struct {
		args   []string
		asUser bool
		want   string
	}{
		{[]string{"--reps", "0"}, false, "ustack bench: --reps 0: give 1..100 repetitions"},
		{[]string{"--reps", "x"}, false, `invalid value "x" for flag --reps`},
		{[]string{"--bogus"}, false, "flag provided but not defined: --bogus"},
		{[]string{"extra"}, false, `unexpected argument "extra"`},
		{nil, true, "ustack bench needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to make its namespaces: run it with sudo"},
	}
	for _, c := range cases {
		cmd := exec.Command(ustackBinary(t), append([]string{"bench"}, c.args...)...)
		if c.asUser {
			if os.Geteuid() != 0 {
				continue
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("ustack bench %q (as nobody: %v): %v, want exit status 2\n%s", c.args, c.asUser, err, out)
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("ustack bench %q: %q, want it to say %q", c.args, out, c.want)
		}
	}
}

// TestBenchFdbasedPeer runs ustack bench's reference peer on its own, as the
// bench starts it: gVisor's fdbased endpoint on a TUN, the apps on it. It
// checks that the apps answer through it, that SIGTERM stops it with exit
// status 0 while a connection is open, and that the interface goes with it.
func TestBenchFdbasedPeer(t *testing.T) {
	netnstest.Require(t)
	const name = "refpeer0"
	p := start(t, "echo on port 7", "__bench-fdbased", "--quiet", "--name", name, "--addr", "198.18.5.1/24",
		"--no-ipv6", "--mtu", "1500", "--serve", "echo:7,discard:9")
	if !linkExists(name) {
		t.Fatalf("no interface %s while the peer runs", name)
	}

	c, err := net.DialTimeout("tcp", "198.18.5.2:7", 5*time.Second)
	if err != nil {
		t.Fatalf("dial the echo app on the peer: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	in := make([]byte, 1<<20)
	for i := range in {
		in[i] = byte(rand.N(256))
	}
	wrote := make(chan error, 1)
	go func() { _, err := c.Write(in); wrote <- err }()
	got := make([]byte, len(in))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, in) {
		t.Fatalf("1 MiB echoed through the peer: %v; the bytes differ: %v", err, !bytes.Equal(got, in))
	}
	if err := <-wrote; err != nil {
		t.Fatalf("send 1 MiB to the peer: %v", err)
	}

	// The connection stays open: the peer closes it within its grace.
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the peer exited %d on SIGTERM; stderr:\n%s", code, p.stderr.String())
	}
	if linkExists(name) {
		t.Errorf("%s still exists after the peer exited", name)
	}

	// The apps that need UDP are refused, with exit status 2 and the reason.
	out, err := exec.Command(ustackBinary(t), "__bench-fdbased", "--name", name, "--serve", "ack:5000").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "the reference peer runs TCP apps only") {
		t.Errorf("__bench-fdbased --serve ack:5000: %v, %q; want exit status 2 and the reason", err, out)
	}
	if linkExists(name) {
		t.Errorf("the refused peer left %s behind", name)
	}
}
