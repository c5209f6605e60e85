package probe

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// records is a short connection: slow start, a fast recovery, an RTO.
func records() []Record {
	const conn = "198.18.0.2:5000-198.18.0.1:43512"
	return []Record{
		{Time: 0, Conn: conn, State: "ESTABLISHED", Cwnd: 10, Ssthresh: math.MaxInt, MSS: 1460,
			RTO: time.Second, SndWnd: 64240},
		{Time: 12345 * time.Microsecond, Conn: conn, State: "ESTABLISHED", Cwnd: 20, Ssthresh: math.MaxInt, MSS: 1460,
			SRTT: 1234 * time.Microsecond, RTTVar: 617 * time.Microsecond, RTO: 200 * time.Millisecond,
			InFlight: 18, SackedOut: 0, SndWnd: 64240, SndUna: 14600, SndNxt: 40880},
		{Time: 1500 * time.Millisecond, Conn: conn, State: "ESTABLISHED", Cwnd: 13, Ssthresh: 10, MSS: 1460,
			SRTT: 2 * time.Millisecond, RTTVar: time.Millisecond, RTO: 200 * time.Millisecond,
			InFlight: 20, SackedOut: 3, SndWnd: 1 << 20, SndUna: 4294967295, SndNxt: 29200,
			Retransmits: 1, Event: EventFastRecovery},
		{Time: 2 * time.Second, Conn: "[fd75:7374:6163:6b::2]:5000-[fd75:7374:6163:6b::1]:1", State: "CLOSE-WAIT", Cwnd: 1, Ssthresh: 2, MSS: 1440,
			RTO: 400 * time.Millisecond, Retransmits: math.MaxUint64, Event: EventRTO},
		{Time: 3 * time.Second, Conn: `a "strange", name`, Cwnd: 2, Ssthresh: 2, Event: EventRetransmit},
	}
}

func TestProbeRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, r := range records() {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	if !strings.HasPrefix(text, Header+"\n") {
		t.Errorf("does not start with the header:\n%s", text)
	}
	for _, want := range []string{
		"\n0.012345,198.18.0.2:5000-198.18.0.1:43512,ESTABLISHED,20,9223372036854775807,1460,1.234,0.617,200.000,18,26280,0,64240,14600,40880,0,\n",
		",4294967295,29200,1,fast-recovery\n",
		"\n0.000000,",
		`"a ""strange"", name"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in\n%s", want, text)
		}
	}
	got, err := ReadAll(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if want := records(); !slices.Equal(got, want) {
		t.Errorf("read back\n%+v\nwant\n%+v", got, want)
	}
}

func TestProbeHeaderMatchesColumns(t *testing.T) {
	if len(header) != numColumns {
		t.Fatalf("Header has %d columns, the code %d", len(header), numColumns)
	}
	for i, name := range map[int]string{colTime: "time_s", colCwnd: "cwnd", colSRTT: "srtt_ms", colEvent: "event"} {
		if header[i] != name {
			t.Errorf("column %d is %q, want %q", i, header[i], name)
		}
	}
}

func TestWriterRoundsToMicroseconds(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	r := Record{Time: 1500 * time.Nanosecond, Conn: "c", SRTT: 1499 * time.Nanosecond}
	if err := w.Write(r); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if want := "\n0.000002,c,,0,0,0,0.001,0.000,0.000,"; !strings.Contains(buf.String(), want) {
		t.Errorf("got %q, want %q in it", buf.String(), want)
	}
}

func TestWriterFlushWithoutRowsWritesTheHeader(t *testing.T) {
	var buf bytes.Buffer
	if err := NewWriter(&buf).Flush(); err != nil {
		t.Fatal(err)
	}
	if buf.String() != Header+"\n" {
		t.Errorf("got %q", buf.String())
	}
	recs, err := ReadAll(&buf)
	if err != nil || len(recs) != 0 {
		t.Errorf("ReadAll = %v, %v; want no records", recs, err)
	}
}

func TestWriterRefusesWhatReaderWouldNot(t *testing.T) {
	for _, tc := range []struct {
		r    Record
		want string
	}{
		{Record{}, `probe: write a row of "": column conn: the connection is empty`},
		{Record{Conn: "c", Cwnd: -1}, `column cwnd: -1 is negative`},
		{Record{Conn: "c", RTO: -time.Millisecond}, `column rto_ms: -1ms is negative`},
		{Record{Conn: "c\r\n"}, `column conn: "c\r\n" has a control character`},
		{Record{Conn: "c", State: "\xff"}, `column state: "\xff" is not UTF-8`},
		{Record{Conn: "c", Event: "loss"}, `column event: unknown event "loss": want fast-recovery, rto, retransmit or nothing`},
	} {
		var buf bytes.Buffer
		err := NewWriter(&buf).Write(tc.r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Write(%+v) = %v, want %q", tc.r, err, tc.want)
		}
		if buf.Len() != 0 {
			t.Errorf("Write(%+v) wrote %q", tc.r, buf.String())
		}
	}
}

func TestWriterConcurrent(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				if err := w.Write(Record{Conn: "c", Cwnd: i*1000 + j}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadAll(&buf)
	if err != nil || len(recs) != 800 {
		t.Errorf("read %d records, %v; want 800", len(recs), err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriterReportsWriteErrors(t *testing.T) {
	w := NewWriter(failingWriter{})
	w.Write(Record{Conn: "c"})
	if err := w.Flush(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Flush = %v, want disk full", err)
	}
}

func TestReaderAcceptsSpreadsheetSpellings(t *testing.T) {
	in := "\ufeff" + Header + "\r\n" +
		" 1.5 ,c,,+3,7,1460,2,0.5,200.0001,0,5,0,0,-0,+5,0,\r\n" +
		"\r\n" +
		".0000005,c,,1,1,1,.5,1.,0,0,0,0,0,0,0,0,retransmit\r\n"
	got, err := ReadAll(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{Time: 1500 * time.Millisecond, Conn: "c", Cwnd: 3, Ssthresh: 7, MSS: 1460, SRTT: 2 * time.Millisecond,
			RTTVar: 500 * time.Microsecond, RTO: 200 * time.Millisecond, SndNxt: 5},
		{Time: time.Microsecond, Conn: "c", Cwnd: 1, Ssthresh: 1, MSS: 1, SRTT: 500 * time.Microsecond,
			RTTVar: time.Millisecond, Event: EventRetransmit},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestReaderEmptyInputHasNoRecords(t *testing.T) {
	r := NewReader(strings.NewReader(""))
	for range 2 {
		if _, err := r.Read(); err != io.EOF {
			t.Errorf("Read = %v, want io.EOF", err)
		}
	}
}

func row(fields map[int]string) string {
	f := []string{"0.000000", "c", "ESTABLISHED", "10", "20", "1460", "1.000", "0.500", "200.000", "0", "0", "0", "65535", "0", "0", "0", ""}
	for i, v := range fields {
		f[i] = v
	}
	return strings.Join(f, ",") + "\n"
}

func TestReaderBadInput(t *testing.T) {
	h := Header + "\n"
	good := row(nil)
	wantHeader := `probe: the input does not start with the header "` + Header + `" of a TCP probe CSV`
	for _, tc := range []struct {
		name, in, want string
	}{
		{"no header", good, wantHeader + ` (its first line is "0.000000,c,ESTABLISHED,10,20,1460,1.000,0.500,200.000,0,0,0,65535,0,0,0,")`},
		{"other csv", "a,b\n1,2\n", wantHeader + ` (its first line is "a,b")`},
		{"long first line", strings.Repeat("x", 100) + "\n", wantHeader + ` (its first line is "` + strings.Repeat("x", 77) + `...")`},
		{"header missing a column", strings.TrimSuffix(Header, ",event") + "\n", wantHeader + ` (its line 1 stops after column 16, retransmits: no event)`},
		{"header with a column more", Header + ",cc\n", wantHeader + ` (its line 1 has 18 columns, want 17)`},
		{"header with another name", strings.Replace(Header, "cwnd", "CWND", 1) + "\n", wantHeader + ` (its column 4 is "CWND", want cwnd)`},
		{"empty line 1", "\"\"\n", wantHeader + ` (its first line is "")`},
		{"bad quote in the header", "time_s,\"conn\n", wantHeader + `: line 1, byte 14: extraneous or missing " in quoted-field`},
		{"cwnd", h + good + good + good + good + good + row(map[int]string{colCwnd: "x"}), `probe: line 7, column cwnd: "x" is not a number`},
		{"fraction", h + row(map[int]string{colMSS: "1460.5"}), `probe: line 2, column mss: "1460.5" is not a whole number`},
		{"negative", h + row(map[int]string{colInFlight: "-3"}), `probe: line 2, column inflight: -3 is negative`},
		{"inflight bytes", h + row(map[int]string{colSndNxt: "100"}), `probe: line 2, column inflight_bytes: 0 is not snd_nxt - snd_una (100)`},
		{"huge", h + row(map[int]string{colSsthresh: "99999999999999999999"}), `probe: line 2, column ssthresh: "99999999999999999999" is out of range`},
		{"snd_una beyond 32 bits", h + row(map[int]string{colSndUna: "4294967296"}), `probe: line 2, column snd_una: "4294967296" is out of range`},
		{"snd_nxt negative", h + row(map[int]string{colSndNxt: "-1"}), `probe: line 2, column snd_nxt: -1 is negative`},
		{"retransmits", h + row(map[int]string{colRetransmits: "1e3"}), `probe: line 2, column retransmits: "1e3" is not a whole number`},
		{"time", h + row(map[int]string{colTime: "1e-3"}), `probe: line 2, column time_s: "1e-3" is not a number of seconds like 0.012345`},
		{"time empty", h + row(map[int]string{colTime: ""}), `probe: line 2, column time_s: "" is not a number of seconds like 0.012345`},
		{"time negative", h + row(map[int]string{colTime: "-0.5"}), `probe: line 2, column time_s: -0.5 is negative`},
		{"time huge", h + row(map[int]string{colTime: "9223372037"}), `probe: line 2, column time_s: "9223372037" is out of range`},
		{"srtt", h + row(map[int]string{colSRTT: "1.2.3"}), `probe: line 2, column srtt_ms: "1.2.3" is not a number of milliseconds like 12.345`},
		{"rto huge", h + row(map[int]string{colRTO: "9223372036854.7755"}), `probe: line 2, column rto_ms: "9223372036854.7755" is out of range`},
		{"conn empty", h + row(map[int]string{colConn: ""}), `probe: line 2, column conn: the connection is empty`},
		{"conn control", h + row(map[int]string{colConn: "\"a\tb\""}), `probe: line 2, column conn: "a\tb" has a control character`},
		{"state not utf-8", h + row(map[int]string{colState: "\xff"}), `probe: line 2, column state: "\xff" is not UTF-8`},
		{"event", h + row(map[int]string{colEvent: "loss"}), `probe: line 2, column event: unknown event "loss": want fast-recovery, rto, retransmit or nothing`},
		{"too few columns", h + "1,2,3\n", `probe: line 2: 3 columns, want the header's 17`},
		{"too many columns", h + strings.TrimSuffix(good, "\n") + ",x\n", `probe: line 2: 18 columns, want the header's 17`},
		{"bare quote", h + good + `0.1,a"b` + "\n", `probe: line 3, byte 6: bare " in non-quoted-field`},
		{"line of a multi-line row", h + good + `"x` + "\ny\",1,1\n", `probe: line 3: 3 columns, want the header's 17`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadAll(strings.NewReader(tc.in))
			if err == nil || err.Error() != tc.want {
				t.Errorf("ReadAll:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestReaderNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cwnd.csv")
	if err := os.WriteFile(path, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := NewReader(f)
	want := "probe: " + path + " does not start with the header"
	for range 2 { // the error stays
		if _, err := r.Read(); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Read = %v, want %q...", err, want)
		}
	}
}

func TestReaderGoesOnAfterABadRow(t *testing.T) {
	r := NewReader(strings.NewReader(Header + "\n" + row(map[int]string{colCwnd: "x"}) + row(map[int]string{colCwnd: "7"})))
	if _, err := r.Read(); err == nil {
		t.Fatal("no error for cwnd x")
	}
	if rec, err := r.Read(); err != nil || rec.Cwnd != 7 {
		t.Errorf("Read = %+v, %v; want cwnd 7", rec, err)
	}
	if _, err := r.Read(); err != io.EOF {
		t.Errorf("Read = %v, want io.EOF", err)
	}
}

func TestParseMicrosInvertsFormatMicros(t *testing.T) {
	for _, us := range []int64{0, 1, 999, 1000, 999999, 1000000, 1234567, maxMicros - 1, maxMicros} {
		for _, decimals := range []int{3, 6} {
			s := formatMicros(time.Duration(us)*time.Microsecond, decimals)
			got, err := parseMicros(s, decimals)
			if err != nil || got != us {
				t.Errorf("parseMicros(%q, %d) = %d, %v; want %d", s, decimals, got, err, us)
			}
		}
	}
}

func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, r := range records() {
		w.Write(r)
	}
	w.Flush()
	f.Add(buf.Bytes())
	f.Add([]byte(Header + "\n" + row(map[int]string{colTime: "1.9999995", colSRTT: "+.0005"})))
	f.Add([]byte("\ufeff" + Header + "\r\n" + row(map[int]string{colConn: `"a` + "\r\n" + `b"`})))
	f.Add([]byte(Header + "\n" + row(map[int]string{colCwnd: "x"}) + row(nil)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		// Read it all, going past bad rows: nothing may panic.
		r := NewReader(bytes.NewReader(in))
		var recs []Record
		for range len(in) + 2 { // every Read consumes a line, or stops
			rec, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				if !strings.HasPrefix(err.Error(), "probe: ") {
					t.Fatalf("error without the package's name: %v", err)
				}
				if r.err != nil {
					break // the header: it stays
				}
				continue
			}
			recs = append(recs, rec)
		}
		// What was read writes, and reads back the same.
		var out bytes.Buffer
		w := NewWriter(&out)
		for _, rec := range recs {
			if err := w.Write(rec); err != nil {
				t.Fatalf("Write(%+v) of a record Read returned: %v", rec, err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		again, err := ReadAll(&out)
		if err != nil {
			t.Fatalf("reading back what was written: %v\n%s", err, out.String())
		}
		if !slices.Equal(again, recs) {
			t.Fatalf("read back\n%+v\nwant\n%+v", again, recs)
		}
	})
}
