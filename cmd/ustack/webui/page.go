package webui

import (
	"net/http"
	"sort"
	"sync"
	"time"
)

// page is one browser's event stream: the events waiting for it, and a
// channel closed when it is disconnected for falling behind.
type page struct {
	c       chan []byte
	dropped chan struct{}
	once    sync.Once
}

func (p *page) drop() { p.once.Do(func() { close(p.dropped) }) }

// events serves GET /events: hello, the history, then live events until the
// browser goes, falls behind, or the UI stops.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	// The stream ends the connection: its write deadlines must not outlive
	// it on a kept-alive one.
	w.Header().Set("Connection", "close")
	if r.Method == http.MethodHead {
		return
	}
	p := &page{c: make(chan []byte, pageQueue), dropped: make(chan struct{})}
	history, refused := s.subscribe(p)
	if refused != "" {
		http.Error(w, refused, http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()
	defer s.unsubscribe(p)
	w.WriteHeader(http.StatusOK)

	write := func(msg []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := w.Write(msg)
		return err == nil
	}
	// A page gone, dropped or too slow stops the replay, which holds on to
	// the history's events until it ends.
	replayEnd := time.Now().Add(replayLimit)
	for i, msg := range history {
		if i%64 == 0 && (s.stopped(p, r) || time.Now().After(replayEnd)) {
			return
		}
		if !write(msg) {
			return
		}
	}
	history = nil
	if rc.Flush() != nil {
		return
	}
	for {
		select {
		case msg := <-p.c:
			if !write(msg) {
				return
			}
			// Write what else is waiting before flushing: one flush per
			// burst, not per event.
			for n := len(p.c); n > 0; n-- {
				if !write(<-p.c) {
					return
				}
			}
			if rc.Flush() != nil {
				return
			}
		case <-p.dropped:
			return
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		}
	}
}

// stopped tells whether a page's stream is to end.
func (s *Server) stopped(p *page, r *http.Request) bool {
	select {
	case <-p.dropped:
	case <-r.Context().Done():
	case <-s.stop:
	default:
		return false
	}
	return true
}

// subscribe registers a page and returns what it must be sent first: hello,
// then the events kept of each connection, oldest connection first, then the
// table and the counters as they were last sent. Registering and reading the
// history happen under one lock, so that no event is missed or sent twice.
//
// It refuses a page, saying why, when the UI is stopping or serves maxPages
// already. A page it takes counts in s.wg until its stream ends: Close
// waits for it.
func (s *Server) subscribe(p *page) (history [][]byte, refused string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		return nil, "ustack is stopping"
	default:
	}
	if len(s.clients) >= maxPages {
		return nil, "too many pages are watching this ustack: close one"
	}
	info := &helloEvent{Version: s.info.Version, Iface: s.info.Iface, Keep: Keep, Stack: []string{}}
	for _, a := range s.info.Addrs {
		info.Stack = append(info.Stack, a.String())
	}
	out := [][]byte{encode("hello", info)}
	conns := make([]*connHist, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	sort.Slice(conns, func(i, j int) bool { return conns[i].first.Before(conns[j].first) })
	for _, c := range conns {
		out = append(out, c.packets.ev...)
		out = append(out, c.samples.ev...)
	}
	if s.lastLost > 0 {
		out = append(out, encode("lost", &lostEvent{T: s.since(time.Now()), N: s.lastLost, Why: "the UI's taps fell behind the stack"}))
	}
	s.clients[p] = struct{}{}
	s.wg.Add(1) // before Close can close s.stop: it takes s.mu to
	if s.lastConns != nil {
		out = append(out, s.lastConns, s.lastCounters)
	}
	return out, ""
}

func (s *Server) unsubscribe(p *page) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.clients, p)
}
