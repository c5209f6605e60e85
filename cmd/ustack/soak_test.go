package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// TestSoakScript runs scripts/soak.sh: mixed traffic (ACK sessions, echo,
// discard, http, chargen, ping) at 1% loss against one ustack, every byte
// checked, and the process's RSS, goroutines and fds compared between the
// second and the last quarter of the run. 60 s by default (what CI runs);
// USTACK_SOAK=10m for a longer one, with a go test -timeout to match
// (USTACK_SOAK=10m go test -timeout 20m -run TestSoakScript -v ./cmd/ustack/).
func TestSoakScript(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	needTool(t, "curl")
	needTool(t, "ping")
	needTool(t, "unshare")
	duration := "60s"
	if d := os.Getenv("USTACK_SOAK"); d != "" {
		duration = d
	}
	d, err := time.ParseDuration(duration)
	if err != nil {
		t.Fatalf("USTACK_SOAK=%s: %v", duration, err)
	}
	// The run, then its last clients (seconds, normally; at most 300 s
	// when something hangs, then the script fails).
	limit := d + 6*time.Minute
	if deadline, ok := t.Deadline(); ok && time.Until(deadline) < d+time.Minute {
		t.Fatalf("a %v soak needs a longer go test -timeout: %v left", d, time.Until(deadline).Round(time.Second))
	} else if ok && time.Until(deadline)-30*time.Second < limit {
		limit = time.Until(deadline) - 30*time.Second
	}
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()

	bin := ustackBinary(t) // first: it sets the environment the binary needs
	cmd := exec.CommandContext(ctx, "../../scripts/soak.sh", duration)
	cmd.Env = append(os.Environ(), "USTACK_BIN="+bin)
	// Past the limit, SIGTERM: the script stops its clients and ustack and
	// removes its files.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("scripts/soak.sh %s: still running after %v: %v\n%s", duration, limit.Round(time.Second), err, out)
	}
	if err != nil {
		t.Fatalf("scripts/soak.sh %s: %v\n%s", duration, err, out)
	}
	if !regexp.MustCompile(`(?m)^PASS$`).Match(out) {
		t.Fatalf("scripts/soak.sh %s: exited 0 but its summary does not say PASS:\n%s", duration, out)
	}
	t.Logf("scripts/soak.sh %s:\n%s", duration, out)
}
