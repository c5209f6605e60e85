package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/ustack/ustack/stack/tap"
)

// pcapSnapLen is the snap length written into the pcap header: every packet is
// written whole, and no IP packet is longer.
const pcapSnapLen = 1 << 16

// pcapFile writes packets as pcap with nanosecond timestamps and link type
// LINKTYPE_RAW (101: the packet starts with its IPv4 or IPv6 header, as on a
// TUN), through gopacket's pcapgo writer. It runs on the pcap tap's goroutine,
// never on the data path.
type pcapFile struct {
	path     string // "" for stdout
	maxBytes int64  // rotate when the file would grow beyond; 0: never
	f        *os.File
	buf      *bufio.Writer
	w        *pcapgo.Writer
	size     int64
	failed   bool // a write failed and was reported: the tap is off
}

// openPcap creates path (or takes stdout for "-") and writes the pcap file
// header.
func openPcap(path string, stdout io.Writer, maxBytes int64) (*pcapFile, error) {
	p := &pcapFile{maxBytes: maxBytes}
	if path == "-" {
		// (SIGPIPE is ignored: when the reader goes away, tcpdump -r -
		// quits, the write fails with EPIPE and switches the tap off.)
		p.buf = bufio.NewWriterSize(stdout, 1<<16)
	} else {
		p.path = path
		if err := p.create(); err != nil {
			return nil, err
		}
	}
	if err := p.start(); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *pcapFile) create() error {
	f, err := os.Create(p.path)
	if err != nil {
		return err
	}
	p.f, p.buf = f, bufio.NewWriterSize(f, 1<<16)
	return nil
}

func (p *pcapFile) start() error {
	p.w = pcapgo.NewWriterNanos(p.buf)
	p.size = 24
	return p.w.WriteFileHeader(pcapSnapLen, layers.LinkTypeRaw)
}

// write appends one packet, rotating first when it would not fit.
func (p *pcapFile) write(pkt tap.Packet) error {
	rec := int64(16 + len(pkt.Data))
	if p.maxBytes > 0 && p.size+rec > p.maxBytes && p.size > 24 {
		if err := p.rotate(); err != nil {
			return err
		}
	}
	ci := gopacket.CaptureInfo{Timestamp: pkt.Time, CaptureLength: len(pkt.Data), Length: pkt.Len}
	if err := p.w.WritePacket(ci, pkt.Data); err != nil {
		return p.fail(err)
	}
	p.size += rec
	return nil
}

// fail marks the file failed and says what failed: the file's own errors
// name it already; stdout's do not.
func (p *pcapFile) fail(err error) error {
	p.failed = true
	if p.path == "" {
		return fmt.Errorf("write the pcap to stdout: %w", err)
	}
	return err
}

// rotate moves the full file to FILE.1 (replacing an older one) and starts a
// new FILE: the capture never takes more than twice --pcap-max-bytes.
func (p *pcapFile) rotate() error {
	if err := p.buf.Flush(); err != nil {
		return p.fail(err)
	}
	if err := p.f.Close(); err != nil {
		return p.fail(err)
	}
	p.f = nil
	if err := os.Rename(p.path, p.path+".1"); err != nil {
		return p.fail(fmt.Errorf("rotate: %w", err))
	}
	if err := p.create(); err != nil {
		return p.fail(fmt.Errorf("rotate: %w", err))
	}
	if err := p.start(); err != nil {
		return p.fail(err)
	}
	return nil
}

func (p *pcapFile) flush() error {
	if err := p.buf.Flush(); err != nil {
		return p.fail(err)
	}
	return nil
}

// close flushes and closes the file. A failure already reported by write or
// flush is not reported again.
func (p *pcapFile) close() error {
	var err error
	if !p.failed {
		err = p.flush()
	}
	if p.f != nil {
		if cerr := p.f.Close(); cerr != nil && err == nil && !p.failed {
			err = cerr
		}
		p.f = nil
	}
	return err
}
