package main

// End-to-end test of the web view: ustack up --ui in a private namespace,
// driven by a real headless Chromium through chromedp while nc talks to the
// stack.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ustack/ustack/tunif/netnstest"
)

// screenshotEnv names the file the web view test saves its screenshot to;
// scripts/ui-screenshot.sh sets it to make the README's picture. Without it
// the screenshot goes to artifacts/webui.png at the top of the repository.
const screenshotEnv = "USTACK_UI_SCREENSHOT"

// chromium finds a Chromium to drive.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	netnstest.Skipf(t, "Chromium is not installed (apt-get install chromium)")
	return ""
}

// browser starts a headless Chromium and returns its context, and a func that
// returns the JavaScript exceptions and console errors the page raised.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // root in a test namespace
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 900),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	// Start the browser (without a timeout: a timeout on the first Run
	// would end the browser with it), then subscribe to its console.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", chromium(t), err)
	}
	var mu sync.Mutex
	var errs []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleError {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s:%d: %s", m.URL, m.Line+1, m))
				mu.Unlock()
			}
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

// TestWebUI: after an nc session, the page shows the connection's row
// (ESTABLISHED while it is open, CLOSED after), a ladder whose first three
// arrows are the handshake, in order and labelled, and the state machine's
// path; the page raises no JavaScript error. The terminal ladder of the same
// session is checked on the way.
func TestWebUI(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	chromium(t)
	ui := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, "web view: http://", "up", "--no-ipv6", "--ui", ui, "--trace=ladder")
	url := "http://" + ui + "/"

	ctx, jsErrors := browser(t)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS("#status")),
		poll(`document.querySelector('#status').textContent.includes('live')`),
	); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}

	// nc stays connected until its input ends: the row must say
	// ESTABLISHED meanwhile.
	nc := exec.Command("nc", "-N", stackV4, "5000")
	stdin, err := nc.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var ncOut syncBuffer
	nc.Stdout = &ncOut
	if err := nc.Start(); err != nil {
		t.Fatal(err)
	}
	defer nc.Process.Kill()
	io.WriteString(stdin, "hello\n")
	waitFor(t, "the ACK server's answer", func() bool { return ncOut.String() == "ACK: hello\n" })

	row := `document.querySelector('#conns tbody tr[data-conn^="198.18.0.2:5000-198.18.0.1:"]')`
	if err := chromedp.Do(ctx, poll(row+`?.querySelector('td.state')?.textContent === 'ESTABLISHED'`)); err != nil {
		t.Fatalf("the row never said ESTABLISHED while nc was connected: %v\n%s", err, pageText(ctx))
	}

	stdin.Close()
	if err := waitExit(nc, 10*time.Second); err != nil {
		t.Fatalf("nc: %v", err)
	}
	if err := chromedp.Do(ctx, poll(row+`?.querySelector('td.state')?.textContent === 'CLOSED' && `+row+`.classList.contains('closed')`)); err != nil {
		t.Fatalf("the row never said CLOSED after nc left: %v\n%s", err, pageText(ctx))
	}

	// The ladder of the selected connection (the first to appear is
	// selected by itself): the handshake's three arrows first.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#conns tbody tr[data-conn^="198.18.0.2:5000-"]`)),
		poll(`document.querySelectorAll('#ladder g.arrow').length >= 8`),
	); err != nil {
		t.Fatalf("ladder: %v\n%s", err, pageText(ctx))
	}
	arrows := evaluate[[]map[string]string](t, ctx, `[...document.querySelectorAll('#ladder g.arrow')].map(g => ({label: g.dataset.label, dir: g.dataset.dir}))`)
	want := []map[string]string{
		{"label": "SYN seq=0", "dir": "in"},
		{"label": "SYN-ACK seq=0 ack=1", "dir": "out"},
		{"label": "ACK ack=1", "dir": "in"},
		{"label": `PSH-ACK 1:7 "hello\n"`, "dir": "in"},
	}
	for i, w := range want {
		if i >= len(arrows) || arrows[i]["label"] != w["label"] || arrows[i]["dir"] != w["dir"] {
			t.Errorf("ladder arrows %v, want %v first", arrows, want)
			break
		}
	}
	phases := evaluate[[]string](t, ctx, `[...document.querySelectorAll('#ladder g.phase')].map(g => g.dataset.phase)`)
	current := evaluate[string](t, ctx, `document.querySelector('#state-machine g.state.current')?.dataset.state ?? ''`)
	visited := evaluate[[]string](t, ctx, `[...document.querySelectorAll('#state-machine g.state.visited')].map(g => g.dataset.state)`)
	if len(phases) < 2 || phases[0] != "handshake" || phases[len(phases)-1] != "teardown" {
		t.Errorf("ladder brackets %v, want the handshake first and the teardown last", phases)
	}
	if current != "CLOSED" || !contains(visited, "ESTABLISHED") || !contains(visited, "SYN-RCVD") {
		t.Errorf("state machine: current %q, visited %v", current, visited)
	}

	// Click the SYN: the detail panel shows its layers.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#ladder g.arrow`)),
		poll(`document.querySelectorAll('#detail section[data-layer]').length >= 3`),
	); err != nil {
		t.Fatalf("detail panel: %v\n%s", err, pageText(ctx))
	}
	layers := evaluate[[]string](t, ctx, `[...document.querySelectorAll('#detail section[data-layer]')].map(s => s.dataset.layer)`)
	if strings.Join(layers, ",") != "Link (TUN),IPv4,TCP" {
		t.Errorf("the SYN's layers: %v", layers)
	}

	shot := os.Getenv(screenshotEnv)
	if shot == "" {
		shot = filepath.Join("..", "..", "artifacts", "webui.png")
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(shot), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)

	jsError := evaluate[string](t, ctx, `document.querySelector('#js-error')?.textContent ?? ''`)
	if errs := jsErrors(); len(errs) > 0 || strings.TrimSpace(jsError) != "" {
		t.Errorf("the page raised JavaScript errors: %v %q", errs, jsError)
	}

	// The terminal ladder of the same session.
	p.stop(t, 2) // SIGINT
	out := p.stdout.String()
	for _, w := range []string{"──── SYN seq=0 ─", "◀─── SYN-ACK seq=0 ack=1 ─", "──── ACK ack=1 ─", "handshake 3/3 · ESTABLISHED"} {
		if !strings.Contains(out, w) {
			t.Errorf("--trace=ladder printed no %q:\n%s", w, out)
		}
	}
}

// poll waits until a JavaScript expression is true.
func poll(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))
}

// evaluate returns the value of a JavaScript expression.
func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// pageText is the page's visible text, for a failure message.
func pageText(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	return s
}

func waitExit(cmd *exec.Cmd, limit time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		cmd.Process.Kill()
		return fmt.Errorf("did not exit within %v", limit)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
