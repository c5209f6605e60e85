package probe

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// Writer writes Records as CSV, the Header first. It is safe for concurrent
// use: netstack calls its probe from the goroutine of each connection.
type Writer struct {
	mu          sync.Mutex
	csv         *csv.Writer
	wroteHeader bool
	row         []string // reused for each row
}

// NewWriter returns a Writer to w. Rows are buffered: call Flush before w is
// closed, and now and then for a reader following the file.
func NewWriter(w io.Writer) *Writer {
	return &Writer{csv: csv.NewWriter(w), row: make([]string, numColumns)}
}

// Write writes r as one row, after the header when it is the first.
// Durations are rounded to the microsecond. It refuses a Record that Reader
// would not read back: negative numbers, an empty Conn, control characters in
// Conn or State, an Event other than the Event constants.
func (w *Writer) Write(r Record) error {
	if err := r.check(); err != nil {
		return fmt.Errorf("probe: write a row of %q: %s", r.Conn, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.header(); err != nil {
		return err
	}
	row := w.row
	row[colTime] = formatMicros(r.Time, 6)
	row[colConn] = r.Conn
	row[colState] = r.State
	row[colCwnd] = strconv.Itoa(r.Cwnd)
	row[colSsthresh] = strconv.Itoa(r.Ssthresh)
	row[colMSS] = strconv.Itoa(r.MSS)
	row[colSRTT] = formatMicros(r.SRTT, 3)
	row[colRTTVar] = formatMicros(r.RTTVar, 3)
	row[colRTO] = formatMicros(r.RTO, 3)
	row[colInFlight] = strconv.Itoa(r.InFlight)
	row[colInFlightBytes] = strconv.FormatUint(uint64(r.InFlightBytes()), 10)
	row[colSackedOut] = strconv.Itoa(r.SackedOut)
	row[colSndWnd] = strconv.Itoa(r.SndWnd)
	row[colSndUna] = strconv.FormatUint(uint64(r.SndUna), 10)
	row[colSndNxt] = strconv.FormatUint(uint64(r.SndNxt), 10)
	row[colRetransmits] = strconv.FormatUint(r.Retransmits, 10)
	row[colEvent] = r.Event
	if err := w.csv.Write(row); err != nil {
		return fmt.Errorf("probe: write: %w", err)
	}
	return nil
}

// Flush writes the buffered rows to the underlying io.Writer, and the header
// if no row came: a recording without rows is a file with the header only.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.header(); err != nil {
		return err
	}
	w.csv.Flush()
	if err := w.csv.Error(); err != nil {
		return fmt.Errorf("probe: write: %w", err)
	}
	return nil
}

// header writes the header once. w.mu must be held.
func (w *Writer) header() error {
	if w.wroteHeader {
		return nil
	}
	if err := w.csv.Write(header); err != nil {
		return fmt.Errorf("probe: write the header: %w", err)
	}
	w.wroteHeader = true
	return nil
}

// formatMicros writes d, rounded to the microsecond, in seconds (decimals 6)
// or milliseconds (decimals 3) with that many decimals: the inverse of
// parseMicros. d is not negative: Record.check saw to that.
func formatMicros(d time.Duration, decimals int) string {
	us := int64(d.Round(time.Microsecond) / time.Microsecond)
	unit := pow10(decimals)
	frac := strconv.FormatInt(us%unit+unit, 10) // 1 and decimals digits, zeros kept
	return strconv.FormatInt(us/unit, 10) + "." + frac[1:]
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}
