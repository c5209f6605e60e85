package main

// ustack bench, end to end: the real binary in the test's private namespace,
// making its own namespaces inside it.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// benchJSON is the part of ustack bench --json the test reads.
type benchJSON struct {
	Reps     int      `json:"reps"`
	Quick    bool     `json:"quick"`
	Variants []string `json:"variants"`
	Metrics  []struct {
		Key    string          `json:"key"`
		Kernel *benchJSONStats `json:"kernel"`
		Ustack *benchJSONStats `json:"ustack"`
		Ratio  *float64        `json:"ratio"`
	} `json:"metrics"`
	Notes []string `json:"notes"`
}

type benchJSONStats struct {
	Median, Min, Max float64
	Samples          []float64
}

// TestBenchQuick runs ustack bench --quick --json and checks that every
// metric was measured for both variants and that nothing is left behind.
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
	if !strings.Contains(stderr.String(), "bench: rep 1/1 · ustack · bulk upload") {
		t.Errorf("no progress line on stderr:\n%s", stderr.String())
	}

	var res benchJSON
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if res.Reps != 1 || !res.Quick || len(res.Variants) != 2 {
		t.Errorf("reps %d, quick %v, variants %q: want 1, true and two variants", res.Reps, res.Quick, res.Variants)
	}
	wantKeys := []string{"upload_gbps", "download_gbps", "rr_p50_us", "rr_p99_us", "rr64_rate", "conn_rate", "cpu_upload_s_per_gib", "cpu_download_s_per_gib", "idle_conn_kib"}
	seen := map[string]bool{}
	for _, m := range res.Metrics {
		seen[m.Key] = true
		ustackOnly := m.Key == "idle_conn_kib"
		for _, v := range []struct {
			name string
			s    *benchJSONStats
		}{{"kernel", m.Kernel}, {"ustack", m.Ustack}} {
			if v.name == "kernel" && ustackOnly {
				if v.s != nil {
					t.Errorf("%s: a kernel value %+v for a ustack-only metric", m.Key, v.s)
				}
				continue
			}
			if v.s == nil || !(v.s.Median > 0) || len(v.s.Samples) != 1 {
				t.Errorf("%s, %s: %+v, want one positive sample", m.Key, v.name, v.s)
			}
		}
		if !ustackOnly && (m.Ratio == nil || !(*m.Ratio > 0)) {
			t.Errorf("%s: ratio %v, want a positive number", m.Key, m.Ratio)
		}
	}
	for _, k := range wantKeys {
		if !seen[k] {
			t.Errorf("metric %s missing from\n%s", k, out)
		}
	}
	if len(res.Notes) == 0 || !strings.Contains(res.Notes[0], "fast path") {
		t.Errorf("notes %q: want the line about the variants still to come", res.Notes)
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
