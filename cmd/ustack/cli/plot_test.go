package cli

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ustack/ustack/stack/probe"
)

const (
	plotConnA = "198.18.0.2:5000-198.18.0.1:43512"
	plotConnB = "198.18.0.2:5000-198.18.0.1:43514"
)

// synthProbe is a made-up recording: on connection A, slow start from 10
// segments doubling every round trip, a fast recovery that halves cwnd,
// congestion avoidance, an RTO that drops cwnd to 1 and slow start again;
// on connection B, a few rows.
func synthProbe() []probe.Record {
	var recs []probe.Record
	now := time.Duration(0)
	rtt := 2 * time.Millisecond
	cwnd, ssthresh, retx, acked := 10, math.MaxInt, uint64(0), 0
	add := func(conn string, event string) {
		now += rtt / time.Duration(max(cwnd, 1)) // an ACK per segment, cwnd segments per round trip
		recs = append(recs, probe.Record{
			Time: now, Conn: conn, State: "ESTABLISHED", Cwnd: cwnd, Ssthresh: ssthresh, MSS: 1460,
			SRTT: rtt, RTTVar: rtt / 2, RTO: 200 * time.Millisecond, InFlight: cwnd, SndWnd: 1 << 20,
			Retransmits: retx, Event: event,
		})
	}
	grow := func() { // RFC 5681: slow start below ssthresh, congestion avoidance above
		if cwnd < ssthresh {
			cwnd++
			return
		}
		if acked++; acked >= cwnd {
			cwnd, acked = cwnd+1, 0
		}
	}
	for cwnd < 80 {
		grow()
		add(plotConnA, "")
	}
	retx++
	ssthresh, cwnd = 40, 43 // three duplicate ACKs: fast recovery
	add(plotConnA, probe.EventFastRecovery)
	for range 20 {
		add(plotConnA, "")
	}
	retx++
	add(plotConnA, probe.EventRetransmit) // another hole in the same window
	cwnd = 40                             // recovery over
	for range 600 {
		grow()
		add(plotConnA, "")
	}
	rtt = 3 * time.Millisecond
	retx++
	now += 20 * time.Millisecond
	ssthresh, cwnd = cwnd/2, 1 // the retransmission timer fired
	add(plotConnA, probe.EventRTO)
	for range 300 {
		grow()
		add(plotConnA, "")
	}
	cwnd, ssthresh = 10, math.MaxInt
	for range 5 {
		add(plotConnB, "")
	}
	return recs
}

func countRows(recs []probe.Record, conn string) int {
	n := 0
	for _, r := range recs {
		if r.Conn == conn {
			n++
		}
	}
	return n
}

func writeProbe(t *testing.T, path string, recs []probe.Record) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := probe.NewWriter(f)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// runPlotTest runs ustack plot args and returns its stdout, its stderr, and
// what report makes of its error: the exit status.
func runPlotTest(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
	code = report(env, "plot", runPlot(context.Background(), env, args))
	return out.String(), errb.String(), code
}

func TestPlotPNG(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "cwnd.csv")
	recs := synthProbe()
	writeProbe(t, csv, recs)
	rowsA := countRows(recs, plotConnA)

	out := filepath.Join(dir, "out.png")
	stdout, stderr, code := runPlotTest(t, "--width", "800px", "--height", "450px", "-o", out, csv)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	if want := fmt.Sprintf("wrote %s (1 connection, %d rows)\n", out, rowsA); stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	wantErr := fmt.Sprintf("ustack plot: %s has 2 connections: drawing %s (%d rows, the most); draw another with --conn: %s (5 rows)\n", csv, plotConnA, rowsA, plotConnB)
	if stderr != wantErr {
		t.Errorf("stderr\n%q, want\n%q", stderr, wantErr)
	}

	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 800 || b.Dy() != 450 {
		t.Errorf("the PNG is %dx%d, want 800x450", b.Dx(), b.Dy())
	}
	colours := make(map[color.RGBA]bool)
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			r, g, b, a := img.At(x, y).RGBA()
			colours[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}] = true
		}
	}
	if len(colours) <= 3 {
		t.Errorf("the PNG has %d colours: it looks empty", len(colours))
	}
	for _, c := range []color.RGBA{colorCwnd, colorSsthresh} { // lines thick enough to have pixels not antialiased
		if !colours[c] {
			t.Errorf("no pixel of colour %v in the PNG", c)
		}
	}
	if os.Getenv("USTACK_PLOT_SAMPLE") != "" { // to look at it
		copyFile(t, out, os.Getenv("USTACK_PLOT_SAMPLE"))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPlotSVG(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "cwnd.csv")
	writeProbe(t, csv, synthProbe())
	out := filepath.Join(dir, "cwnd.svg")
	stdout, stderr, code := runPlotTest(t, csv, "--conn", plotConnB, "--output="+out, "--title", "B", "--width", "20cm")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	if want := "wrote " + out + " (1 connection, 5 rows)\n"; stdout != want || stderr != "" {
		t.Errorf("stdout %q, stderr %q; want %q and nothing", stdout, stderr, want)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	var root xml.StartElement
	for {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("no root element: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			root = se
			break
		}
	}
	if root.Name.Local != "svg" {
		t.Errorf("the root element is <%s>, want <svg>", root.Name.Local)
	}
	for { // the rest parses too
		if _, err := d.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Errorf("the SVG does not parse: %v", err)
			}
			break
		}
	}
}

// TestPlotDefaultOutputAndOddShapes draws odd data on the smallest image.
func TestPlotDefaultOutputAndOddShapes(t *testing.T) {
	dir := t.TempDir()
	for name, recs := range map[string][]probe.Record{
		"one-row": {{Time: time.Second, Conn: plotConnA, Cwnd: 10, Ssthresh: math.MaxInt}},
		"no-srtt": {{Conn: plotConnA, Cwnd: 10, Ssthresh: math.MaxInt}, {Time: time.Millisecond, Conn: plotConnA, Cwnd: 1, Ssthresh: 2, Event: probe.EventRTO}},
		"huge":    {{Conn: plotConnA, Cwnd: math.MaxInt, Ssthresh: math.MaxInt, SRTT: time.Hour}, {Time: 1000 * time.Hour, Conn: plotConnA, SRTT: time.Microsecond}},
		"zeros":   {{Conn: plotConnA}, {Conn: plotConnA}},
	} {
		csv := filepath.Join(dir, name+".csv")
		writeProbe(t, csv, recs)
		stdout, stderr, code := runPlotTest(t, "--width", "1in", "--height", "1in", csv)
		want := fmt.Sprintf("wrote %s (1 connection, %d rows)\n", filepath.Join(dir, name+".png"), len(recs))
		if code != exitOK || stdout != want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %q", name, code, stdout, stderr, want)
		}
	}
}

func TestPlotErrors(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "cwnd.csv")
	recs := synthProbe()
	writeProbe(t, csv, recs)
	empty := filepath.Join(dir, "empty.csv")
	writeProbe(t, empty, nil)
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, []byte(probe.Header+"\n1,c,,x,1,1,0,0,0,0,0,0,0,0,0,0,\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.csv")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "out.jpg", csv}, "ustack plot: cannot write out.jpg: the image format follows the extension of --output, and it can be .png or .svg"},
		{[]string{"-o", "out", csv}, "ustack plot: cannot write out: the image format follows the extension of --output, and it can be .png or .svg"},
		{[]string{missing}, "ustack plot: open " + missing + ": no such file or directory"},
		{[]string{empty}, "ustack plot: " + empty + " has no rows: record one with ustack up --tcp-probe " + empty},
		{[]string{"--conn", "nope", csv}, `ustack plot: no connection "nope" in ` + csv + ": it has " + plotConnA + fmt.Sprintf(" (%d rows), ", countRows(recs, plotConnA)) + plotConnB + " (5 rows)"},
		{[]string{bad}, `ustack plot: probe: line 2, column cwnd: "x" is not a number`},
		{[]string{}, "ustack plot: which file? ustack plot FILE.csv draws a CSV recorded with ustack up --tcp-probe FILE.csv"},
		{[]string{csv, csv}, `ustack plot: unexpected argument "` + csv + `": ustack plot draws one CSV at a time (run ustack plot --help)`},
		{[]string{"-o", csv + ".png", csv + ".png"}, "ustack plot: --output " + csv + ".png would overwrite the CSV: name another file"},
		{[]string{"--width", "20", csv}, `ustack plot: invalid value "20" for flag --width: "20" has no unit: say 8in, 20cm, 200mm, 576pt or 768px (run ustack plot --help)`},
		{[]string{"--height", "xcm", csv}, `ustack plot: invalid value "xcm" for flag --height: "xcm" is not a length like 8in, 20cm or 800px (run ustack plot --help)`},
		{[]string{"--width", "100in", csv}, `ustack plot: invalid value "100in" for flag --width: "100in" is out of range: it must be 1in..40in (96..3840px) (run ustack plot --help)`},
		{[]string{"-o", filepath.Join(dir, "no", "such", "dir.png"), "--conn", plotConnB, csv}, "ustack plot: write " + filepath.Join(dir, "no", "such", "dir.png") + ": no such file or directory"},
	} {
		stdout, stderr, code := runPlotTest(t, tc.args...)
		wantCode := exitUsage
		if strings.HasPrefix(tc.want, "ustack plot: write ") {
			wantCode = exitFailure
		}
		if code != wantCode || stderr != tc.want+"\n" || stdout != "" {
			t.Errorf("ustack plot %q: exit %d, stderr %q, stdout %q\nwant exit %d, stderr %q", tc.args, code, stderr, stdout, wantCode, tc.want)
		}
	}
}

func TestPlotHelp(t *testing.T) {
	stdout, _, code := runPlotTest(t, "--help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"Usage: ustack plot [flags] FILE.csv", "--output file", "--width width", "(default 8in)", "(default 4.5in)", "--conn connection"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q in the help:\n%s", want, stdout)
		}
	}
}

func TestPlotStopsWithTheContext(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "cwnd.csv")
	var recs []probe.Record
	for i := range 10000 {
		recs = append(recs, probe.Record{Time: time.Duration(i) * time.Millisecond, Conn: plotConnA, Cwnd: 10})
	}
	writeProbe(t, csv, recs)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	err := runPlot(ctx, &Env{Stdout: &out, Stderr: &errb}, []string{csv})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("runPlot = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cwnd.png")); err == nil {
		t.Error("cwnd.png written after the context ended")
	}
}
