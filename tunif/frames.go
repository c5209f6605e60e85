package tunif

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VirtioNetHdrLen is the size of the virtio-net header (struct virtio_net_hdr
// in include/uapi/linux/virtio_net.h) in front of every frame on a TUN opened
// with IFF_VNET_HDR: flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset, little-endian.
const VirtioNetHdrLen = 10

// tcpOffloads are the offloads Frames turns on: the kernel may hand us TCP
// superpackets (TSO, up to 64 KiB) and packets whose checksum is only partial
// (CHECKSUM_PARTIAL, marked VIRTIO_NET_HDR_F_NEEDS_CSUM), and takes the same
// from us. Not UDP segmentation (TUN_F_USO4/6), which wireguard also asks
// for: netstack has no use for UDP superpackets, and without it the kernel
// never makes one.
const tcpOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// ErrNoOffload is wrapped by Frames' error when the device cannot carry
// offloaded frames (the kernel refused IFF_VNET_HDR or TUNSETOFFLOAD).
var ErrNoOffload = errors.New("the TUN device cannot do TCP offloads")

// Frames reads and writes the TUN device's frames as they cross its file
// descriptor: a virtio-net header, then an IP packet of up to 64 KiB — a TSO
// superpacket the kernel did not split, or one for the kernel to split. It is
// the fast path beside the tun.Device that Device returns, which splits and
// coalesces superpackets in user space; both use the same file, and every
// read or write is one whole frame, so they never see half of each other's.
//
// ReadFrame must not be called from two goroutines at once, nor WriteFrame;
// a ReadFrame and a WriteFrame may run concurrently. Neither allocates.
type Frames struct {
	file *os.File
	rc   syscall.RawConn

	// The read side's state, for the readv that readFn runs: the
	// method value is made once, so that a read allocates nothing.
	rdIov   [2]unix.Iovec
	rdN     int
	rdErrno unix.Errno
	readFn  func(uintptr) bool

	wrIov   []unix.Iovec
	wrN     int
	wrErrno unix.Errno
	writeFn func(uintptr) bool
}

// maxWriteIovecs bounds the pieces of one frame WriteFrame takes: a header and
// the views of a packet netstack built (a few headers and payload chunks).
const maxWriteIovecs = 64

// Frames turns on the TCP offloads on the device and returns a frame
// reader-writer on its file. It fails, wrapping ErrNoOffload, when the
// device was opened without IFF_VNET_HDR or the kernel refuses the offloads;
// the tun.Device of Device works either way.
func (i *Interface) Frames() (*Frames, error) {
	return newFrames(i.dev.File(), i.name)
}

func newFrames(file *os.File, name string) (*Frames, error) {
	if file == nil {
		return nil, fmt.Errorf("tunif: %s: %w: the device has no file", name, ErrNoOffload)
	}
	rc, err := file.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tunif: %s: %w: %v", name, ErrNoOffload, err)
	}
	var ioctlErr error
	if err := rc.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		if ifr, ioctlErr = unix.NewIfreq(name); ioctlErr != nil {
			return
		}
		if ioctlErr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); ioctlErr != nil {
			ioctlErr = fmt.Errorf("TUNGETIFF: %w", ioctlErr)
			return
		}
		if ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
			ioctlErr = errors.New("opened without IFF_VNET_HDR")
			return
		}
		if err := unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tcpOffloads); err != nil {
			ioctlErr = fmt.Errorf("TUNSETOFFLOAD: %w", err)
		}
	}); err != nil {
		return nil, fmt.Errorf("tunif: %s: %w: %v", name, ErrNoOffload, err)
	}
	if ioctlErr != nil {
		return nil, fmt.Errorf("tunif: %s: %w: %v", name, ErrNoOffload, ioctlErr)
	}
	f := &Frames{file: file, rc: rc, wrIov: make([]unix.Iovec, 0, maxWriteIovecs)}
	f.readFn = f.readv
	f.writeFn = f.writev
	return f, nil
}

// ReadFrame reads one frame: its virtio-net header into hdr (VirtioNetHdrLen
// bytes) and its IP packet into pkt, and returns the packet's length. A frame
// longer than hdr and pkt fails the read and is lost (the kernel's
// tun_put_user gives up on it), so pkt should hold 64 KiB, the most a TSO
// frame carries; the caller checks the IP header's length. It blocks until a frame comes, the
// read deadline passes (os.ErrDeadlineExceeded) or the device is closed or
// its interface deleted (an error matching os.ErrClosed).
func (f *Frames) ReadFrame(hdr, pkt []byte) (int, error) {
	if len(hdr) != VirtioNetHdrLen || len(pkt) == 0 {
		return 0, fmt.Errorf("tunif: ReadFrame needs a %d-byte header buffer and a packet buffer", VirtioNetHdrLen)
	}
	f.rdIov[0].Base = &hdr[0]
	f.rdIov[0].SetLen(VirtioNetHdrLen)
	f.rdIov[1].Base = &pkt[0]
	f.rdIov[1].SetLen(len(pkt))
	err := f.rc.Read(f.readFn)
	f.rdIov[0].Base, f.rdIov[1].Base = nil, nil // keep no buffer alive
	if err != nil {
		return 0, ioError("read", err)
	}
	if f.rdErrno != 0 {
		return 0, ioError("read", f.rdErrno)
	}
	if f.rdN < VirtioNetHdrLen {
		return 0, &fs.PathError{Op: "read", Path: tunClonePath, Err: fmt.Errorf("a frame of %d bytes, shorter than the virtio-net header", f.rdN)}
	}
	return f.rdN - VirtioNetHdrLen, nil
}

func (f *Frames) readv(fd uintptr) bool {
	n, _, errno := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&f.rdIov[0])), uintptr(len(f.rdIov)))
	if errno == unix.EAGAIN {
		return false // wait in the poller
	}
	if errno == unix.EINTR {
		return f.readv(fd)
	}
	f.rdN, f.rdErrno = int(n), errno
	return true
}

// WriteFrame writes one frame, gathered from bufs: bufs[0] is its virtio-net
// header, the rest are the pieces of the IP packet (written as they are, not
// copied). It returns the bytes written, header included.
func (f *Frames) WriteFrame(bufs [][]byte) (int, error) {
	if len(bufs) == 0 || len(bufs[0]) != VirtioNetHdrLen {
		return 0, fmt.Errorf("tunif: WriteFrame needs a %d-byte virtio-net header first", VirtioNetHdrLen)
	}
	if len(bufs) > maxWriteIovecs {
		return 0, fmt.Errorf("tunif: WriteFrame of %d pieces; at most %d", len(bufs), maxWriteIovecs)
	}
	iov := f.wrIov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	f.wrIov = iov
	err := f.rc.Write(f.writeFn)
	clear(f.wrIov) // keep no buffer alive
	if err != nil {
		return 0, ioError("write", err)
	}
	if f.wrErrno != 0 {
		return 0, ioError("write", f.wrErrno)
	}
	return f.wrN, nil
}

func (f *Frames) writev(fd uintptr) bool {
	n, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&f.wrIov[0])), uintptr(len(f.wrIov)))
	if errno == unix.EAGAIN {
		return false
	}
	if errno == unix.EINTR {
		return f.writev(fd)
	}
	f.wrN, f.wrErrno = int(n), errno
	return true
}

// SetReadDeadline wakes a ReadFrame blocked in the poller at t; one in the
// past wakes it at once.
func (f *Frames) SetReadDeadline(t time.Time) error { return f.file.SetReadDeadline(t) }

// ioError says what failed, in the shape the rest of ustack tests for: a
// deleted interface (EBADFD) or a closed file match os.ErrClosed, a deadline
// os.ErrDeadlineExceeded, and a failed system call is an *fs.PathError.
func ioError(op string, err error) error {
	var errno unix.Errno
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, os.ErrClosed):
		return err
	case errors.As(err, &errno):
		if errno == unix.EBADFD {
			return fmt.Errorf("tunif: %s: %w (%v)", op, os.ErrClosed, errno)
		}
		return &fs.PathError{Op: op, Path: tunClonePath, Err: errno}
	}
	// The poller's own error for a file closed under it ("use of closed
	// file") is not os.ErrClosed until os.File wraps it, which RawConn
	// does not.
	return fmt.Errorf("tunif: %s: %w (%v)", op, os.ErrClosed, err)
}
