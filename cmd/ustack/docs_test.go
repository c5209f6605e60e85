package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// fencedAfter returns the lines of the first fenced code block after the line
// that contains marker.
func fencedAfter(t *testing.T, doc, marker string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, marker)
	if !ok {
		t.Fatalf("docs/LAYERS.md has no %q", marker)
	}
	_, rest, ok = strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("no code block after %q", marker)
	}
	_, rest, _ = strings.Cut(rest, "\n") // the fence's language
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("the code block after %q does not end", marker)
	}
	return strings.Split(strings.TrimRight(block, "\n"), "\n")
}

// TestLayersDoc keeps docs/LAYERS.md true: it runs the session the page
// documents and checks that every trace line the page quotes still appears,
// in order, with any numbers in place of the page's (ports, windows, lengths
// differ from machine to machine; words, flags, annotations and states may
// not).
func TestLayersDoc(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	raw, err := os.ReadFile("../../docs/LAYERS.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	session := fencedAfter(t, doc, "<!-- session")
	quoted := fencedAfter(t, doc, "<!-- trace")
	if len(session) != 2 || !strings.HasPrefix(session[0], "sudo ustack up ") {
		t.Fatalf("the session block should be `sudo ustack up ...` and one client command, got %q", session)
	}

	p := start(t, "TCP Server running", strings.Fields(strings.TrimPrefix(session[0], "sudo ustack "))...)
	out, err := exec.Command("sh", "-c", session[1]).CombinedOutput()
	if err != nil || string(out) != "ACK: hello\n" {
		t.Fatalf("%s: %q, %v", session[1], out, err)
	}
	digits := regexp.MustCompile(`\d+`)
	var patterns []string
	for _, line := range quoted {
		patterns = append(patterns, "^"+digits.ReplaceAllString(regexp.QuoteMeta(line), `\d+`)+"$")
	}
	deadline := time.Now().Add(10 * time.Second)
	for traceHas(p.stdout.String(), patterns) != "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if missing := traceHas(p.stdout.String(), patterns); missing != "" {
		t.Errorf("docs/LAYERS.md quotes a trace line that the session no longer prints (as a pattern: %s); the trace was:\n%s", missing, p.stdout.String())
	}
	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("ustack up exited %d", code)
	}
}
