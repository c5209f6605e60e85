package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/ustack/ustack/stack/probe"
)

const plotAbout = `
Draws, for one TCP connection of a CSV that ustack up --tcp-probe FILE.csv
recorded, the congestion window (cwnd) and the slow-start threshold
(ssthresh), in segments, over time, with the retransmissions marked: a red
cross and line where the retransmission timer fired (RTO: cwnd back to 1), an
orange triangle and line where fast recovery began (cwnd about halved), a
purple ring at any other retransmission. A second panel shows the smoothed
round-trip time (srtt). What the columns of the CSV mean, for a learner:
  go doc github.com/ustack/ustack/stack/probe

ssthresh starts unlimited (netstack writes the largest int) and gets a value
at the first loss: it is not drawn while above 4 times the largest cwnd.

The image format follows the extension of --output: .png (96 pixels to the
inch) or .svg. Sizes take a unit: in, cm, mm, pt or px.`

// Bounds of --width and --height: a 40in PNG is 3840 pixels wide, and a
// plot smaller than 1in has no room for its axes.
const (
	plotMinSide = 1 * vg.Inch
	plotMaxSide = 40 * vg.Inch
)

func runPlot(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("plot", "ustack plot [flags] FILE.csv", plotAbout)
	fs.positional = true
	var (
		output, conn, title string
		width               = lengthFlag{8 * vg.Inch, "8in"}
		height              = lengthFlag{4.5 * vg.Inch, "4.5in"}
	)
	fs.StringVar(&output, "output", "", "image `file` to write, .png or .svg (default: FILE with .png instead of .csv)")
	fs.StringVar(&output, "o", "", "short for --output `file`")
	fs.StringVar(&conn, "conn", "", "the `connection` to draw, as the conn column spells it (default: the one with the most rows)")
	fs.Var(&width, "width", "`width` of the image, with a unit: in, cm, mm, pt or px")
	fs.Var(&height, "height", "`height` of the image, with a unit: in, cm, mm, pt or px")
	fs.StringVar(&title, "title", "", "`text` above the plot (default: cwnd and ssthresh, and the connection)")
	rest, err := parse(fs, env, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) == 0:
		return usageErrorf("which file? ustack plot FILE.csv draws a CSV recorded with ustack up --tcp-probe FILE.csv")
	case len(rest) > 1:
		return usageErrorf("unexpected argument %q: ustack plot draws one CSV at a time (run ustack plot --help)", rest[1])
	}
	input := rest[0]
	if output == "" {
		output = strings.TrimSuffix(input, filepath.Ext(input)) + ".png"
	}
	format := strings.ToLower(filepath.Ext(output))
	if format != ".png" && format != ".svg" {
		return usageErrorf("cannot write %s: the image format follows the extension of --output, and it can be .png or .svg", output)
	}
	if filepath.Clean(output) == filepath.Clean(input) {
		return usageErrorf("--output %s would overwrite the CSV: name another file", output)
	}

	conns, rows, err := readProbe(ctx, input)
	if err != nil {
		return err
	}
	if rows == 0 {
		return usageErrorf("%s has no rows: record one with ustack up --tcp-probe %s", input, input)
	}
	c, err := pickConn(conns, conn, input)
	if err != nil {
		return err
	}
	if conn == "" && len(conns) > 1 {
		fmt.Fprintf(env.Stderr, "ustack plot: %s has %d connections: drawing %s (%d rows, the most); draw another with --conn: %s\n",
			input, len(conns), c.name, len(c.rows), listConns(conns, c, 5))
	}
	if title == "" {
		title = "cwnd and ssthresh of " + c.name
	}
	if err := writePlot(output, format, title, c.rows, width.l, height.l); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s (1 connection, %d rows)\n", output, len(c.rows))
	return nil
}

// lengthFlag is an image size with its unit, as typed.
type lengthFlag struct {
	l vg.Length
	s string
}

func (f *lengthFlag) String() string { return f.s }

func (f *lengthFlag) Set(s string) error {
	units := []struct {
		suffix string
		unit   vg.Length
	}{{"in", vg.Inch}, {"cm", vg.Centimeter}, {"mm", vg.Millimeter}, {"pt", 1}, {"px", vg.Inch / vgimg.DefaultDPI}}
	for _, u := range units {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		l := vg.Length(v) * u.unit
		if err != nil || math.IsNaN(v) {
			return fmt.Errorf("%q is not a length like 8in, 20cm or 800px", s)
		}
		if l < plotMinSide || l > plotMaxSide {
			return fmt.Errorf("%q is out of range: it must be %s..%s (%.0f..%.0fpx)", s,
				fmtInches(plotMinSide), fmtInches(plotMaxSide), plotMinSide.Dots(vgimg.DefaultDPI), plotMaxSide.Dots(vgimg.DefaultDPI))
		}
		f.l, f.s = l, s
		return nil
	}
	return fmt.Errorf("%q has no unit: say 8in, 20cm, 200mm, 576pt or 768px", s)
}

func fmtInches(l vg.Length) string {
	return strconv.FormatFloat(float64(l/vg.Inch), 'g', -1, 64) + "in"
}

// plotConn is the rows of one connection, in the order of the file.
type plotConn struct {
	name string
	rows []probe.Record
}

// readProbe reads a probe CSV, its connections in the order they first appear.
func readProbe(ctx context.Context, path string) (conns []*plotConn, rows int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, &usageError{err}
	}
	defer f.Close()
	r := probe.NewReader(f)
	byName := make(map[string]*plotConn)
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return conns, rows, nil
		}
		if err != nil {
			return nil, 0, &usageError{err}
		}
		c := byName[rec.Conn]
		if c == nil {
			c = &plotConn{name: rec.Conn}
			byName[rec.Conn] = c
			conns = append(conns, c)
		}
		c.rows = append(c.rows, rec)
		if rows++; rows%4096 == 0 && ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
	}
}

// pickConn returns the connection named name, or with no name the one with
// the most rows (the first of those).
func pickConn(conns []*plotConn, name, input string) (*plotConn, error) {
	if name == "" {
		best := conns[0]
		for _, c := range conns[1:] {
			if len(c.rows) > len(best.rows) {
				best = c
			}
		}
		return best, nil
	}
	for _, c := range conns {
		if c.name == name {
			return c, nil
		}
	}
	return nil, usageErrorf("no connection %q in %s: it has %s", name, input, listConns(conns, nil, 10))
}

// listConns lists the connections but skip, the most rows first, at most n.
func listConns(conns []*plotConn, skip *plotConn, n int) string {
	var others []*plotConn
	for _, c := range conns {
		if c != skip {
			others = append(others, c)
		}
	}
	slices.SortStableFunc(others, func(a, b *plotConn) int { return len(b.rows) - len(a.rows) })
	var b strings.Builder
	for i, c := range others {
		if i == n {
			fmt.Fprintf(&b, " and %d more", len(others)-n)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%d rows)", c.name, len(c.rows))
	}
	return b.String()
}

// Colours of the plot.
var (
	colorCwnd         = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colorSsthresh     = color.RGBA{R: 44, G: 160, B: 44, A: 255}
	colorSRTT         = color.RGBA{R: 90, G: 90, B: 90, A: 255}
	colorFastRecovery = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	colorRTO          = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	colorRetransmit   = color.RGBA{R: 148, G: 103, B: 189, A: 255}
)

// plotEvents are the kinds of events drawn, in the order of the legend.
var plotEvents = []struct {
	event, label string
	color        color.RGBA
	glyph        draw.GlyphDrawer
	line         bool // a vertical line across the panels too
}{
	{probe.EventRTO, "RTO: cwnd back to 1", colorRTO, draw.CrossGlyph{}, true},
	{probe.EventFastRecovery, "fast recovery: cwnd halved", colorFastRecovery, draw.TriangleGlyph{}, true},
	{probe.EventRetransmit, "other retransmission", colorRetransmit, draw.RingGlyph{}, false},
}

// writePlot draws rows, one connection's, to file in format (".png" or
// ".svg"), through a temporary file in the same directory.
func writePlot(file, format, title string, rows []probe.Record, w, h vg.Length) error {
	var canvas vg.CanvasWriterTo
	if format == ".png" {
		canvas = vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	} else {
		canvas = vgsvg.New(w, h)
	}
	dc := draw.New(canvas)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	drawProbe(dc, title, rows)

	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return writeError(file, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	_, err = canvas.WriteTo(tmp)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		return writeError(file, err)
	}
	return nil
}

// writeError names the file asked for, not the temporary one.
func writeError(file string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	return fmt.Errorf("write %s: %w", file, err)
}

// drawProbe draws on dc the title, the legend in two columns under it, the
// cwnd panel, and below it the srtt panel when some row has an RTT sample.
func drawProbe(dc draw.Canvas, title string, rows []probe.Record) {
	// The recorder writes a connection's rows from more than one source
	// (its probe samples, its retransmitted packets): put them in order.
	slices.SortStableFunc(rows, func(a, b probe.Record) int { return cmp.Compare(a.Time, b.Time) })
	t0, t1 := rows[0].Time.Seconds(), rows[len(rows)-1].Time.Seconds()
	lines := make(map[string]*eventLines) // by event
	for _, e := range plotEvents {
		if !e.line {
			continue
		}
		el := &eventLines{style: draw.LineStyle{Color: fade(e.color), Width: vg.Points(1)}}
		for _, r := range rows {
			if r.Event == e.event {
				el.xs = append(el.xs, r.Time.Seconds())
			}
		}
		lines[e.event] = el
	}

	top, legends := cwndPlot(rows, lines)
	panels := []*plot.Plot{top}
	if bottom := srttPlot(rows, lines); bottom != nil {
		panels = append(panels, bottom)
	}
	for _, p := range panels {
		p.X.Min, p.X.Max = t0, t1
	}
	panels[len(panels)-1].X.Label.Text = "time since the recording started (s)"

	// The title, centred at the top, as plot.Plot draws one; the legend
	// under it, off the data (cwnd fills any corner of a panel).
	pad := vg.Points(4)
	ts := top.Title.TextStyle
	dc.FillText(ts, vg.Point{X: dc.Center().X, Y: dc.Max.Y - pad + ts.FontExtents().Descent}, title)
	area := draw.Crop(dc, 0, 0, 0, -(ts.Rectangle(title).Size().Y + 2*pad))
	var legendHeight vg.Length
	for _, l := range legends {
		legendHeight = max(legendHeight, l.Rectangle(area).Size().Y)
	}
	strip := area
	area = draw.Crop(area, 0, 0, 0, -(legendHeight + 2*pad))

	// The panels: cwnd gets two thirds of the height, and both get the
	// wider of their left margins (the room of the Y axis labels), so that
	// their time axes line up.
	canvases := []draw.Canvas{area}
	if len(panels) == 2 {
		split := (area.Max.Y - area.Min.Y) / 3
		canvases = []draw.Canvas{
			draw.Crop(area, 0, 0, split, 0),
			draw.Crop(area, 0, 0, 0, -(area.Max.Y - area.Min.Y - split)),
		}
	}
	var margin vg.Length
	for i, p := range panels {
		margin = max(margin, p.DataCanvas(canvases[i]).Min.X-canvases[i].Min.X)
	}
	for i, p := range panels {
		c := canvases[i]
		p.Draw(draw.Crop(c, margin-(p.DataCanvas(c).Min.X-c.Min.X), 0, 0, 0))
	}

	x := strip.Min.X + margin
	for _, l := range legends {
		c := strip
		c.Min.X = x
		l.Draw(c)
		x += l.Rectangle(c).Size().X + 6*pad
	}
}

// cwndPlot returns the panel of cwnd, ssthresh and the events, and its
// legend in columns.
func cwndPlot(rows []probe.Record, lines map[string]*eventLines) (*plot.Plot, []*plot.Legend) {
	p := plot.New()
	p.Y.Label.Text = "segments"
	p.Add(plotter.NewGrid())
	newLegend := func() *plot.Legend {
		l := plot.NewLegend()
		l.Top, l.Left = true, true
		l.TextStyle.Font.Size = vg.Points(9)
		return &l
	}
	lines1, events := newLegend(), newLegend()

	cwnd := make(plotter.XYs, len(rows))
	maxCwnd := 0
	for i, r := range rows {
		cwnd[i] = plotter.XY{X: r.Time.Seconds(), Y: float64(r.Cwnd)}
		maxCwnd = max(maxCwnd, r.Cwnd)
	}
	// ssthresh above this is off the chart: netstack's "unlimited" until
	// the first loss. Drawn, it would squash cwnd against the bottom.
	limit := 4 * float64(max(maxCwnd, 2))
	ssStyle := draw.LineStyle{Color: colorSsthresh, Width: vg.Points(1.5), Dashes: []vg.Length{vg.Points(5), vg.Points(3)}}
	var ssRuns []plotter.XYs // the stretches where ssthresh is on the chart
	top := float64(maxCwnd)
	for i, r := range rows {
		ss := float64(r.Ssthresh)
		if ss > limit {
			continue
		}
		if i == 0 || float64(rows[i-1].Ssthresh) > limit {
			ssRuns = append(ssRuns, nil)
		}
		ssRuns[len(ssRuns)-1] = append(ssRuns[len(ssRuns)-1], plotter.XY{X: r.Time.Seconds(), Y: ss})
		top = max(top, ss)
	}
	p.Y.Min, p.Y.Max = 0, max(top, 1)*1.05

	addLines(p, lines)
	for _, run := range ssRuns {
		p.Add(&plotter.Line{XYs: run, StepStyle: plotter.PostStep, LineStyle: ssStyle})
	}
	cwndStyle := draw.LineStyle{Color: colorCwnd, Width: vg.Points(1.5)}
	p.Add(&plotter.Line{XYs: cwnd, StepStyle: plotter.PostStep, LineStyle: cwndStyle})

	lines1.Add("cwnd", &plotter.Line{LineStyle: cwndStyle})
	ssLabel := "ssthresh (blank while unlimited: before the first loss)"
	if len(ssRuns) == 0 {
		ssLabel = "ssthresh: unlimited all along (no loss)"
	}
	lines1.Add(ssLabel, &plotter.Line{LineStyle: ssStyle})
	legends := []*plot.Legend{lines1}
	var marks []plot.Plotter
	for _, e := range plotEvents {
		var pts plotter.XYs
		for _, r := range rows {
			if r.Event == e.event {
				pts = append(pts, plotter.XY{X: r.Time.Seconds(), Y: float64(r.Cwnd)})
			}
		}
		if len(pts) == 0 {
			continue
		}
		s := &plotter.Scatter{XYs: pts, GlyphStyle: draw.GlyphStyle{Color: e.color, Radius: vg.Points(3.5), Shape: e.glyph}}
		marks = append(marks, s)
		thumbs := []plot.Thumbnailer{s}
		if l := lines[e.event]; l != nil {
			thumbs = []plot.Thumbnailer{l, s}
		}
		events.Add(fmt.Sprintf("%s (%d)", e.label, len(pts)), thumbs...)
		if len(legends) == 1 {
			legends = append(legends, events)
		}
	}
	slices.Reverse(marks) // the rarer kinds on top: RTO over fast recovery over the others
	p.Add(marks...)
	return p, legends
}

// srttPlot returns the panel of the smoothed RTT, or nil when no row has an
// RTT sample (srtt is 0 until the first one).
func srttPlot(rows []probe.Record, lines map[string]*eventLines) *plot.Plot {
	var pts plotter.XYs
	for _, r := range rows {
		if r.SRTT > 0 {
			pts = append(pts, plotter.XY{X: r.Time.Seconds(), Y: float64(r.SRTT.Microseconds()) / 1000})
		}
	}
	if len(pts) == 0 {
		return nil
	}
	p := plot.New()
	p.Y.Label.Text = "srtt (ms)"
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	addLines(p, lines)
	p.Add(&plotter.Line{XYs: pts, StepStyle: plotter.PostStep, LineStyle: draw.LineStyle{Color: colorSRTT, Width: vg.Points(1.2)}})
	return p
}

// addLines adds the event lines to p, in the order of plotEvents.
func addLines(p *plot.Plot, lines map[string]*eventLines) {
	for _, e := range plotEvents {
		if l := lines[e.event]; l != nil {
			p.Add(l)
		}
	}
}

// fade makes c translucent, for lines behind the data.
func fade(c color.RGBA) color.RGBA {
	const a = 110
	return color.RGBA{R: uint8(uint32(c.R) * a / 255), G: uint8(uint32(c.G) * a / 255), B: uint8(uint32(c.B) * a / 255), A: a}
}

// eventLines is a plot.Plotter of vertical lines across the whole panel, at
// the times of one kind of event. It has no data range: it leaves the axes to
// the data.
type eventLines struct {
	xs    []float64
	style draw.LineStyle
}

var (
	_ plot.Plotter     = (*eventLines)(nil)
	_ plot.Thumbnailer = (*eventLines)(nil)
)

// Plot implements plot.Plotter.
func (e *eventLines) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	for _, x := range e.xs {
		if x < p.X.Min || x > p.X.Max {
			continue
		}
		c.StrokeLine2(e.style, trX(x), c.Min.Y, trX(x), c.Max.Y)
	}
}

// Thumbnail implements plot.Thumbnailer: a vertical line in the legend.
func (e *eventLines) Thumbnail(c *draw.Canvas) {
	x := (c.Min.X + c.Max.X) / 2
	c.StrokeLine2(e.style, x, c.Min.Y, x, c.Max.Y)
}
