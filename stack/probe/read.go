package probe

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Reader reads Records from a CSV written by Writer, or by a spreadsheet that
// kept its columns. It checks every value and never panics on bad input; its
// errors name the line and the column.
type Reader struct {
	csv     *csv.Reader
	name    string // of the input in messages: the file name, or "the input"
	started bool   // the header was read
	err     error  // sticky: the header is missing or wrong
	intern  map[string]string
}

// NewReader returns a Reader from r. When r has a Name method, as *os.File
// does, errors about the header name the file.
func NewReader(r io.Reader) *Reader {
	c := csv.NewReader(r)
	c.FieldsPerRecord = -1 // checked here, with a better message
	c.ReuseRecord = true
	name := "the input"
	if n, ok := r.(interface{ Name() string }); ok {
		name = n.Name()
	}
	return &Reader{csv: c, name: name, intern: make(map[string]string)}
}

// maxInterned bounds the strings a Reader keeps to share between rows.
const maxInterned = 4096

// Read returns the next Record, or io.EOF after the last one. An empty input
// has no Records. A missing or different header is an error that every later
// call returns too; after an error in a row, Read goes on with the next row.
func (r *Reader) Read() (Record, error) {
	if r.err != nil {
		return Record{}, r.err
	}
	if !r.started {
		if err := r.readHeader(); err != nil {
			if err != io.EOF {
				r.err = err
			}
			return Record{}, err
		}
		r.started = true
	}
	row, err := r.csv.Read()
	if err == io.EOF {
		return Record{}, io.EOF
	}
	if err != nil {
		return Record{}, fmt.Errorf("probe: %w", csvError(err))
	}
	if len(row) != numColumns {
		line, _ := r.csv.FieldPos(0)
		return Record{}, fmt.Errorf("probe: line %d: %d columns, want the header's %d", line, len(row), numColumns)
	}
	var rec Record
	if err := r.parse(row, &rec); err != nil {
		line, _ := r.csv.FieldPos(err.col)
		return Record{}, fmt.Errorf("probe: line %d, %s", line, err)
	}
	return rec, nil
}

func (r *Reader) readHeader() error {
	row, err := r.csv.Read()
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return fmt.Errorf("probe: %s does not start with the header %q of a TCP probe CSV: %w", r.name, Header, csvError(err))
	}
	if len(row) > 0 {
		row[0] = strings.TrimPrefix(row[0], "\ufeff") // the byte-order mark some spreadsheets write
	}
	diff := headerDiff(row)
	if diff == "" {
		return nil
	}
	return fmt.Errorf("probe: %s does not start with the header %q of a TCP probe CSV (%s)", r.name, Header, diff)
}

// headerDiff says how the first row differs from the header, or returns "".
func headerDiff(row []string) string {
	if len(row) == 0 || row[0] != header[0] { // not a probe CSV at all
		first := strings.Join(row, ",")
		if len(first) > 80 {
			first = first[:77] + "..."
		}
		return fmt.Sprintf("its first line is %q", first)
	}
	for i, name := range header { // a probe CSV of another version
		switch {
		case i == len(row):
			return fmt.Sprintf("its line 1 stops after column %d, %s: no %s", i, row[i-1], name)
		case row[i] != name:
			return fmt.Sprintf("its column %d is %q, want %s", i+1, row[i], name)
		}
	}
	if len(row) > numColumns {
		return fmt.Sprintf("its line 1 has %d columns, want %d", len(row), numColumns)
	}
	return ""
}

// csvError rewords an error of the csv package (not io.EOF) the way ours are.
func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("line %d, byte %d: %w", pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("read: %w", err)
}

// parse fills rec from the fields of a row, and checks it.
func (r *Reader) parse(row []string, rec *Record) *fieldError {
	var err *fieldError
	durations := func(col, decimals int, dst *time.Duration) {
		if err == nil {
			*dst, err = parseDuration(row[col], col, decimals)
		}
	}
	ints := func(col int, dst *int) {
		if err == nil {
			*dst, err = parseInt(row[col], col)
		}
	}
	uints := func(col, bits int) uint64 {
		var v uint64
		if err == nil {
			v, err = parseUint(row[col], col, bits)
		}
		return v
	}
	durations(colTime, 6, &rec.Time)
	rec.Conn = r.share(row[colConn])
	rec.State = r.share(row[colState])
	ints(colCwnd, &rec.Cwnd)
	ints(colSsthresh, &rec.Ssthresh)
	ints(colMSS, &rec.MSS)
	durations(colSRTT, 3, &rec.SRTT)
	durations(colRTTVar, 3, &rec.RTTVar)
	durations(colRTO, 3, &rec.RTO)
	ints(colInFlight, &rec.InFlight)
	ints(colSackedOut, &rec.SackedOut)
	ints(colSndWnd, &rec.SndWnd)
	rec.SndUna = uint32(uints(colSndUna, 32))
	rec.SndNxt = uint32(uints(colSndNxt, 32))
	rec.Retransmits = uints(colRetransmits, 64)
	if inFlight := uints(colInFlightBytes, 32); err == nil && uint32(inFlight) != rec.InFlightBytes() {
		err = &fieldError{colInFlightBytes, fmt.Sprintf("%d is not snd_nxt - snd_una (%d)", inFlight, rec.InFlightBytes())}
	}
	switch e := row[colEvent]; e {
	case EventFastRecovery, EventRTO, EventRetransmit:
		rec.Event = e // the constant: shares no memory with the row
	default:
		rec.Event = r.share(e)
	}
	if err != nil {
		return err
	}
	return rec.check()
}

// share returns s, or an equal string read before: rows of one connection
// then hold one copy of its name, not one each.
func (r *Reader) share(s string) string {
	if s == "" {
		return ""
	}
	if t, ok := r.intern[s]; ok {
		return t
	}
	s = strings.Clone(s) // not a piece of the row's line
	if len(r.intern) < maxInterned {
		r.intern[s] = s
	}
	return s
}

// ReadAll reads every Record from r, or returns the first error.
func ReadAll(r io.Reader) ([]Record, error) {
	pr := NewReader(r)
	var recs []Record
	for {
		rec, err := pr.Read()
		if err == io.EOF {
			return recs, nil
		}
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
}

var errRange = errors.New("out of range")

func parseInt(s string, col int) (int, *fieldError) {
	s = strings.TrimSpace(s)
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, numberError(s, col, err)
	}
	if v < 0 {
		return 0, &fieldError{col, fmt.Sprintf("%s is negative", s)}
	}
	return v, nil
}

func parseUint(s string, col, bits int) (uint64, *fieldError) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-") {
		switch n, err := strconv.ParseInt(s, 10, 64); {
		case err == nil && n < 0:
			return 0, &fieldError{col, fmt.Sprintf("%s is negative", s)}
		case err == nil:
			return 0, nil // -0
		}
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "+"), 10, bits)
	if err != nil {
		return 0, numberError(s, col, err)
	}
	return v, nil
}

// numberError says why s is not a whole number.
func numberError(s string, col int, err error) *fieldError {
	switch {
	case errors.Is(err, strconv.ErrRange):
		return &fieldError{col, fmt.Sprintf("%q is out of range", s)}
	case strings.ContainsAny(s, ".eE") && isFloat(s):
		return &fieldError{col, fmt.Sprintf("%q is not a whole number", s)}
	default:
		return &fieldError{col, fmt.Sprintf("%q is not a number", s)}
	}
}

func isFloat(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

func parseDuration(s string, col, decimals int) (time.Duration, *fieldError) {
	s = strings.TrimSpace(s)
	us, err := parseMicros(s, decimals)
	if err != nil {
		example, unit := "0.012345", "seconds"
		if decimals == 3 {
			example, unit = "12.345", "milliseconds"
		}
		if err == errRange {
			return 0, &fieldError{col, fmt.Sprintf("%q is out of range", s)}
		}
		return 0, &fieldError{col, fmt.Sprintf("%q is not a number of %s like %s", s, unit, example)}
	}
	if us < 0 {
		return 0, &fieldError{col, fmt.Sprintf("%s is negative", s)}
	}
	return time.Duration(us) * time.Microsecond, nil
}

// maxMicros is the largest time.Duration, in microseconds.
const maxMicros = math.MaxInt64 / int64(time.Microsecond)

var errSyntax = errors.New("not a decimal number")

// parseMicros parses a decimal number of seconds (decimals 6) or milliseconds
// (decimals 3), like "0.012345", into microseconds, rounding any further
// decimals. It reads the digits itself rather than through a float64, so that
// what formatMicros wrote comes back to the microsecond.
func parseMicros(s string, decimals int) (int64, error) {
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" {
		return 0, errSyntax
	}
	var v int64
	for _, c := range []byte(whole) {
		if c < '0' || c > '9' {
			return 0, errSyntax
		}
		d := int64(c - '0')
		if v > (maxMicros-d)/10 {
			return 0, errRange
		}
		v = v*10 + d
	}
	unit := pow10(decimals)
	if v > maxMicros/unit {
		return 0, errRange
	}
	v *= unit
	var f int64
	roundUp := false
	for i, c := range []byte(frac) {
		if c < '0' || c > '9' {
			return 0, errSyntax
		}
		switch {
		case i < decimals:
			f = f*10 + int64(c-'0')
		case i == decimals:
			roundUp = c >= '5'
		}
	}
	for i := len(frac); i < decimals; i++ {
		f *= 10
	}
	if roundUp {
		f++
	}
	if v > maxMicros-f {
		return 0, errRange
	}
	v += f
	if neg {
		v = -v
	}
	return v, nil
}
