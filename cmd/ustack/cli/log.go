package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ustack/ustack/app"
)

// logFlags are the flags every long-running command shares.
type logFlags struct {
	format string
	quiet  bool
}

func (l *logFlags) register(fs *flagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log format: text (the article's plain lines) or json (one object per line, for tools)")
	fs.BoolVar(&l.quiet, "quiet", false, "log only warnings and errors, not each client and message")
}

// logger returns the logger the flags ask for, writing to w.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	level := slog.LevelInfo
	if l.quiet {
		level = slog.LevelWarn
	}
	switch l.format {
	case "text":
		return slog.New(&plainHandler{w: w, level: level, mu: new(sync.Mutex)}), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
	}
	return nil, usageErrorf("--log-format %q: want text or json", l.format)
}

// plainHandler prints Info records as their message, in the words of the
// article ("Client connected: 198.18.0.1 43512", "Received: hello"), followed
// by the record's own attributes, if any, and led by the app's name for apps
// other than the ACK server ("[echo] Client connected: ..."); other levels get
// the level in front and every attribute after. json keeps every attribute of
// every record.
type plainHandler struct {
	w     io.Writer
	level slog.Level
	attrs []slog.Attr
	mu    *sync.Mutex
}

func (h *plainHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *plainHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	if r.Level != slog.LevelInfo {
		b.WriteString(r.Level.String())
		b.WriteByte(' ')
	}
	// The apps other than the ACK server say which they are.
	for _, a := range h.attrs {
		if a.Key == "service" {
			fmt.Fprintf(&b, "[%v] ", a.Value)
		}
	}
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	if r.Level != slog.LevelInfo {
		for _, a := range h.attrs {
			write(a)
		}
	}
	// The record's own attributes (bytes received and sent, a digest, an
	// error) are part of what it says; the client's address is already in
	// an Info message.
	r.Attrs(func(a slog.Attr) bool {
		if r.Level == slog.LevelInfo && a.Key == "client" {
			return true
		}
		return write(a)
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *plainHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &h2
}

func (h *plainHandler) WithGroup(string) slog.Handler { return h }

// serverFlags configure the ACK server, on either stack.
type serverFlags struct {
	idle     time.Duration
	maxConns int
}

func (s *serverFlags) register(fs *flagSet) {
	fs.DurationVar(&s.idle, "idle-timeout", app.DefaultIdleTimeout, "close a client that has sent nothing for this long (0: never)")
	fs.IntVar(&s.maxConns, "max-conns", app.DefaultMaxConns, "most clients served at once; more are refused with a log line")
}

// options validates the flags and returns the server's options, with the
// logger logs asks for, writing to env.Stderr.
func (s *serverFlags) options(logs logFlags, env *Env) (app.ServerOptions, error) {
	log, err := logs.logger(env.Stderr)
	if err != nil {
		return app.ServerOptions{}, err
	}
	if s.idle < 0 {
		return app.ServerOptions{}, usageErrorf("--idle-timeout %v is negative: give a duration like 5m, or 0 for none", s.idle)
	}
	if s.maxConns < 1 {
		return app.ServerOptions{}, usageErrorf("--max-conns %d: give at least 1", s.maxConns)
	}
	idle := s.idle
	if idle == 0 {
		idle = -1 // app: negative means none
	}
	return app.ServerOptions{Logger: log, IdleTimeout: idle, MaxConns: s.maxConns}, nil
}

// shutdownGrace is how long open connections may finish after SIGINT or
// SIGTERM before they are closed.
const shutdownGrace = time.Second
