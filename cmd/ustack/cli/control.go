package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/fault"
)

// The control socket: a running ustack answers on a unix socket, one JSON
// request per line and one JSON response per line. controlVersion is the
// protocol's version; a request of another version gets an error that says
// which one this ustack speaks.
const (
	controlVersion = 1
	defaultRunDir  = "/run/ustack"
	// maxControlRequest bounds one request line.
	maxControlRequest = 64 << 10
	// controlTimeout bounds a whole exchange on the socket.
	controlTimeout = 15 * time.Second
)

// controlRequest is one request on the control socket.
type controlRequest struct {
	Version int           `json:"v"`
	Op      string        `json:"op"`               // "stats" or "set"
	Faults  *fault.Config `json:"faults,omitempty"` // set: the faults to put in force
}

// controlResponse is the answer to one request.
type controlResponse struct {
	Version int             `json:"v"`
	OK      bool            `json:"ok"`
	Error   string          `json:"error,omitempty"`
	Stats   *stack.Snapshot `json:"stats,omitempty"`
	Faults  string          `json:"faults,omitempty"` // set: the faults now in force
}

// runDir is where the control sockets live: $USTACK_RUN_DIR, or /run/ustack.
func runDir() string {
	if d := os.Getenv("USTACK_RUN_DIR"); d != "" {
		return d
	}
	return defaultRunDir
}

// controlPath is the default control socket of the interface name in the
// network namespace nsName ("" for ustack's own): NAME.sock, or
// NAME@NAMESPACE.sock, so that ustack0 in two namespaces have a socket each.
func controlPath(name, nsName string) string {
	if nsName == "" {
		return filepath.Join(runDir(), name+".sock")
	}
	ns := strings.Trim(strings.ReplaceAll(nsName, "/", "_"), "_")
	return filepath.Join(runDir(), name+"@"+ns+".sock")
}

// controlServer serves the control protocol for one running stack.
type controlServer struct {
	path      string
	ln        *net.UnixListener
	snapshot  func() (*stack.Snapshot, error)
	setFaults func(fault.Config) (string, error)
	wg        sync.WaitGroup
	conns     sync.Map // net.Conn → struct{}, closed by close
}

// listenControl creates the control socket, readable and writable by its
// owner only (root, who runs ustack up). A socket file left by a ustack that
// was killed is replaced; one that answers belongs to a running ustack and is
// an error.
func listenControl(path string, snapshot func() (*stack.Snapshot, error), setFaults func(fault.Config) (string, error)) (*controlServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w (pick another with --control PATH, or --control off)", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, usageErrorf("control socket %s answers: another ustack is running with this name; pick another --name (or --control PATH)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket: remove the stale %s: %w", path, err)
		}
	}
	// The socket file is created with the process umask: make it 0600 from
	// the start rather than chmod it after others could connect.
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w (pick another with --control PATH, or --control off)", err)
	}
	ln.SetUnlinkOnClose(true)
	return &controlServer{path: path, ln: ln, snapshot: snapshot, setFaults: setFaults}, nil
}

// serve answers requests until close.
func (c *controlServer) serve(log *slog.Logger) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := c.ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Error("control socket: " + err.Error())
				}
				return
			}
			c.conns.Store(conn, struct{}{})
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				defer c.conns.Delete(conn)
				defer conn.Close()
				c.handle(conn)
			}()
		}
	}()
}

// handle answers the requests of one connection, each within controlTimeout.
func (c *controlServer) handle(conn net.Conn) {
	r := bufio.NewReaderSize(conn, 4096)
	enc := json.NewEncoder(conn)
	for {
		conn.SetDeadline(time.Now().Add(controlTimeout))
		line, err := readLine(r, maxControlRequest)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				enc.Encode(controlResponse{Version: controlVersion, Error: fmt.Sprintf("request longer than %d bytes", maxControlRequest)})
			}
			return
		}
		if enc.Encode(c.answer(line)) != nil {
			return
		}
	}
}

func (c *controlServer) answer(line []byte) controlResponse {
	resp := controlResponse{Version: controlVersion}
	var req controlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = "bad request: " + err.Error()
		return resp
	}
	if req.Version != controlVersion {
		resp.Error = fmt.Sprintf("protocol version %d is not spoken here: this ustack speaks version %d", req.Version, controlVersion)
		return resp
	}
	switch req.Op {
	case "stats":
		snap, err := c.snapshot()
		if err != nil {
			resp.Error = err.Error()
			return resp
		}
		resp.OK, resp.Stats = true, snap
	case "set":
		if req.Faults == nil {
			resp.Error = "set: no faults given"
			return resp
		}
		now, err := c.setFaults(*req.Faults)
		if err != nil {
			resp.Error = err.Error()
			return resp
		}
		resp.OK, resp.Faults = true, now
	default:
		resp.Error = fmt.Sprintf("unknown op %q: this ustack knows stats and set", req.Op)
	}
	return resp
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line of at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > max {
			return nil, errLineTooLong
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// close removes the socket and waits for the connections being served.
func (c *controlServer) close() error {
	err := c.ln.Close()
	c.conns.Range(func(k, _ any) bool {
		k.(net.Conn).Close()
		return true
	})
	c.wg.Wait()
	return err
}

// askControl sends one request to the control socket at path and returns the
// answer, turning the usual failures into what to do about them.
func askControl(ctx context.Context, path string, req controlRequest) (*controlResponse, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "unix", path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
			return nil, usageErrorf("no running ustack answers on %s: start one with sudo ustack up, or give its --name (or --control PATH)", path)
		case errors.Is(err, fs.ErrPermission):
			return nil, usageErrorf("cannot open %s: the control socket is for root only: run it with sudo", path)
		}
		return nil, fmt.Errorf("connect to %s: %w", path, err)
	}
	defer conn.Close()
	if deadline, ok := dctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	req.Version = controlVersion
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("send to %s: %w", path, err)
	}
	line, err := readLine(bufio.NewReader(conn), 64<<20)
	if err != nil {
		return nil, fmt.Errorf("read the answer from %s: %w", path, err)
	}
	var resp controlResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("bad answer from %s: %w", path, err)
	}
	if !resp.OK {
		return nil, fmt.Errorf("%s: %s", path, resp.Error)
	}
	return &resp, nil
}
