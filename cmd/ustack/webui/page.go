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
	w.WriteHeader(http.StatusOK)

	p := &page{c: make(chan []byte, pageQueue), dropped: make(chan struct{})}
	history := s.subscribe(p)
	defer s.unsubscribe(p)

	write := func(msg []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := w.Write(msg)
		return err == nil
	}
	for _, msg := range history {
		if !write(msg) {
			return
		}
	}
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

// subscribe registers a page and returns what it must be sent first: hello,
// then the events kept of each connection, oldest connection first, then the
// table and the counters as they were last sent. Registering and reading the
// history happen under one lock, so that no event is missed or sent twice.
func (s *Server) subscribe(p *page) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
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
	return out
}

func (s *Server) unsubscribe(p *page) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.clients, p)
}
