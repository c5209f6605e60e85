package cli

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/fault"
)

// metric is one Prometheus metric read from a Snapshot.
type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(s *stack.Snapshot) []labelled
}

// labelled is one sample: a value and its label values, in the order of the
// metric's labels.
type labelled struct {
	v      float64
	labels []string
}

func one(v uint64) []labelled { return []labelled{{v: float64(v)}} }

// stackMetrics lists every metric ustack exports: the link layer per
// direction and IP version, IP, ICMP, TCP and UDP as netstack counts them,
// drops with their reason, the taps, and the TCP connections by state.
func stackMetrics() []metric {
	counter := func(name, help string, labels []string, f func(*stack.Snapshot) []labelled) metric {
		return metric{prometheus.NewDesc("ustack_"+name, help, labels, nil), prometheus.CounterValue, f}
	}
	gauge := func(name, help string, labels []string, f func(*stack.Snapshot) []labelled) metric {
		return metric{prometheus.NewDesc("ustack_"+name, help, labels, nil), prometheus.GaugeValue, f}
	}
	dirIP := []string{"direction", "ip"}
	return []metric{
		counter("link_packets_total", "IP packets that crossed the TUN device, by direction (rx: from the kernel) and IP version.", dirIP,
			func(s *stack.Snapshot) []labelled {
				l := s.Link
				return []labelled{
					{float64(l.RxIPv4Packets), []string{"rx", "4"}}, {float64(l.RxIPv6Packets), []string{"rx", "6"}},
					{float64(l.TxIPv4Packets), []string{"tx", "4"}}, {float64(l.TxIPv6Packets), []string{"tx", "6"}},
				}
			}),
		counter("link_bytes_total", "Bytes of IP packets that crossed the TUN device, by direction and IP version.", dirIP,
			func(s *stack.Snapshot) []labelled {
				l := s.Link
				return []labelled{
					{float64(l.RxIPv4Bytes), []string{"rx", "4"}}, {float64(l.RxIPv6Bytes), []string{"rx", "6"}},
					{float64(l.TxIPv4Bytes), []string{"tx", "4"}}, {float64(l.TxIPv6Bytes), []string{"tx", "6"}},
				}
			}),
		counter("link_transport_packets_total", "IP packets that crossed the TUN device, by direction and the transport protocol they carry.", []string{"direction", "protocol"},
			func(s *stack.Snapshot) []labelled {
				return byProto(s, func(p stack.PacketsBytes) uint64 { return p.Packets })
			}),
		counter("link_transport_bytes_total", "Bytes of IP packets that crossed the TUN device, by direction and the transport protocol they carry.", []string{"direction", "protocol"},
			func(s *stack.Snapshot) []labelled {
				return byProto(s, func(p stack.PacketsBytes) uint64 { return p.Bytes })
			}),
		counter("ip_packets_received_total", "IP packets netstack received, by IP version.", []string{"ip"},
			func(s *stack.Snapshot) []labelled {
				return []labelled{{float64(s.IPv4.PacketsReceived), []string{"4"}}, {float64(s.IPv6.PacketsReceived), []string{"6"}}}
			}),
		counter("ip_packets_delivered_total", "IP packets handed to ICMP, TCP or UDP, by IP version.", []string{"ip"},
			func(s *stack.Snapshot) []labelled {
				return []labelled{{float64(s.IPv4.PacketsDelivered), []string{"4"}}, {float64(s.IPv6.PacketsDelivered), []string{"6"}}}
			}),
		counter("ip_packets_sent_total", "IP packets netstack sent, by IP version.", []string{"ip"},
			func(s *stack.Snapshot) []labelled {
				return []labelled{{float64(s.IPv4.PacketsSent), []string{"4"}}, {float64(s.IPv6.PacketsSent), []string{"6"}}}
			}),
		counter("icmp_packets_total", "ICMP messages, by direction and IP version.", dirIP,
			func(s *stack.Snapshot) []labelled {
				c := s.ICMP
				return []labelled{
					{float64(c.V4In), []string{"rx", "4"}}, {float64(c.V6In), []string{"rx", "6"}},
					{float64(c.V4Out), []string{"tx", "4"}}, {float64(c.V6Out), []string{"tx", "6"}},
				}
			}),
		counter("icmp_echo_requests_total", "Echo requests (ping) received, by IP version.", []string{"ip"},
			func(s *stack.Snapshot) []labelled {
				return []labelled{{float64(s.ICMP.V4EchoRequestsIn), []string{"4"}}, {float64(s.ICMP.V6EchoRequestsIn), []string{"6"}}}
			}),
		counter("icmp_echo_replies_total", "Echo replies (ping) sent, by IP version.", []string{"ip"},
			func(s *stack.Snapshot) []labelled {
				return []labelled{{float64(s.ICMP.V4EchoRepliesOut), []string{"4"}}, {float64(s.ICMP.V6EchoRepliesOut), []string{"6"}}}
			}),
		counter("tcp_fast_recoveries_total", "Times TCP entered fast recovery (RFC 6582) after a loss.", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.FastRecoveries) }),
		counter("fault_packets_total", "Packets fault injection saw, and what it did to them, by direction.", []string{"direction", "action"},
			func(s *stack.Snapshot) []labelled {
				if s.Faults == nil {
					return nil
				}
				var out []labelled
				for _, d := range []struct {
					dir string
					c   fault.DirStats
				}{{"in", s.Faults.Stats.In}, {"out", s.Faults.Stats.Out}} {
					for _, a := range []struct {
						action string
						v      uint64
					}{{"seen", d.c.Packets}, {"lost", d.c.Lost}, {"corrupted", d.c.Corrupted}, {"duplicated", d.c.Duplicated},
						{"reordered", d.c.Reordered}, {"delayed", d.c.Delayed}, {"rate_queued", d.c.RateQueued}, {"rate_dropped", d.c.RateDropped}} {
						out = append(out, labelled{float64(a.v), []string{d.dir, a.action}})
					}
				}
				return out
			}),
		counter("forward_flows_total", "Forwarded flows by protocol and outcome (forwarding mode).", []string{"protocol", "outcome"},
			func(s *stack.Snapshot) []labelled {
				if s.Forward == nil {
					return nil
				}
				var out []labelled
				for _, p := range []struct {
					name string
					c    stack.FlowStats
				}{{"tcp", s.Forward.TCP}, {"udp", s.Forward.UDP}} {
					out = append(out,
						labelled{float64(p.c.Opened), []string{p.name, "opened"}},
						labelled{float64(p.c.NotAllowed), []string{p.name, "not_allowed"}},
						labelled{float64(p.c.DialFailed), []string{p.name, "dial_failed"}},
						labelled{float64(p.c.OverLimit), []string{p.name, "over_limit"}})
				}
				return out
			}),
		gauge("process_goroutines", "Goroutines of the ustack process.", nil, func(s *stack.Snapshot) []labelled {
			if s.Process == nil {
				return nil
			}
			return one(uint64(s.Process.Goroutines))
		}),
		gauge("process_resident_memory_bytes", "Resident memory of the ustack process.", nil, func(s *stack.Snapshot) []labelled {
			if s.Process == nil {
				return nil
			}
			return one(s.Process.RSSBytes)
		}),
		counter("tcp_active_opens_total", "TCP connections the stack opened (it sent the SYN).", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.ActiveOpens) }),
		counter("tcp_passive_opens_total", "TCP connections the stack accepted (it received the SYN).", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.PassiveOpens) }),
		gauge("tcp_established", "TCP connections in ESTABLISHED now.", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.Established) }),
		counter("tcp_segments_received_total", "TCP segments received.", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.SegmentsIn) }),
		counter("tcp_segments_sent_total", "TCP segments sent.", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.SegmentsOut) }),
		counter("tcp_retransmits_total", "TCP segments sent again.", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.Retransmits) }),
		counter("tcp_fast_retransmits_total", "TCP segments sent again after duplicate ACKs (fast retransmit).", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.FastRetransmits) }),
		counter("tcp_timeouts_total", "TCP retransmission timer expiries (RTO).", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.Timeouts) }),
		counter("tcp_resets_sent_total", "TCP RST segments sent.", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.ResetsOut) }),
		counter("tcp_resets_received_total", "TCP RST segments received.", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.ResetsIn) }),
		counter("tcp_failed_connection_attempts_total", "TCP connections that failed to open.", nil, func(s *stack.Snapshot) []labelled { return one(s.TCP.FailedAttempts) }),
		counter("udp_datagrams_received_total", "UDP datagrams received.", nil, func(s *stack.Snapshot) []labelled { return one(s.UDP.DatagramsIn) }),
		counter("udp_datagrams_sent_total", "UDP datagrams sent.", nil, func(s *stack.Snapshot) []labelled { return one(s.UDP.DatagramsOut) }),
		counter("drops_total", "Packets dropped, by layer and reason.", []string{"layer", "reason"},
			func(s *stack.Snapshot) []labelled {
				out := make([]labelled, len(s.Drops))
				for i, d := range s.Drops {
					out[i] = labelled{float64(d.Count), []string{d.Layer, d.Reason}}
				}
				return out
			}),
		counter("tap_events_total", "Events a tap (trace, pcap, tcp-probe) handled.", []string{"tap"},
			func(s *stack.Snapshot) []labelled {
				out := make([]labelled, len(s.Taps))
				for i, t := range s.Taps {
					out[i] = labelled{float64(t.Events), []string{t.Name}}
				}
				return out
			}),
		counter("tap_dropped_total", "Events a tap had to skip because it fell behind.", []string{"tap"},
			func(s *stack.Snapshot) []labelled {
				out := make([]labelled, len(s.Taps))
				for i, t := range s.Taps {
					out[i] = labelled{float64(t.Dropped), []string{t.Name}}
				}
				return out
			}),
		gauge("tcp_connections", "TCP endpoints of the stack, by state.", []string{"state"},
			func(s *stack.Snapshot) []labelled {
				counts := map[string]int{}
				for _, c := range s.Conns {
					counts[c.State]++
				}
				var out []labelled
				for _, st := range tcpStates {
					out = append(out, labelled{float64(counts[st]), []string{st}})
				}
				return out
			}),
	}
}

// byProto lists a per-protocol link counter for both directions.
func byProto(s *stack.Snapshot, v func(stack.PacketsBytes) uint64) []labelled {
	var out []labelled
	for _, d := range []struct {
		dir string
		c   stack.ProtoCounters
	}{{"rx", s.Link.Rx}, {"tx", s.Link.Tx}} {
		out = append(out,
			labelled{float64(v(d.c.TCP)), []string{d.dir, "tcp"}},
			labelled{float64(v(d.c.UDP)), []string{d.dir, "udp"}},
			labelled{float64(v(d.c.ICMP)), []string{d.dir, "icmp"}},
			labelled{float64(v(d.c.Other)), []string{d.dir, "other"}})
	}
	return out
}

// tcpStates are RFC 9293's state names, in the order of the state diagram.
var tcpStates = []string{"LISTEN", "SYN-SENT", "SYN-RCVD", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT", "CLOSED"}

// snapshotCollector is a prometheus.Collector that reads one Snapshot per
// scrape.
type snapshotCollector struct {
	snapshot func() (*stack.Snapshot, error)
	metrics  []metric
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	snap, err := c.snapshot()
	if err != nil {
		return
	}
	for _, m := range c.metrics {
		for _, l := range m.value(snap) {
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, l.v, l.labels...)
		}
	}
}

// metricsServer serves /metrics over HTTP.
type metricsServer struct {
	ln  net.Listener
	srv *http.Server
	wg  sync.WaitGroup
}

// listenMetrics binds addr at once, so a busy port is an error before the
// interface exists.
func listenMetrics(addr string, snapshot func() (*stack.Snapshot, error)) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(&snapshotCollector{snapshot: snapshot, metrics: stackMetrics()}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ustack: metrics are at /metrics\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	return &metricsServer{ln: ln, srv: srv}, nil
}

func (m *metricsServer) serve(log *slog.Logger) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server: " + err.Error())
		}
	}()
}

func (m *metricsServer) close() error {
	err := m.srv.Close()
	m.ln.Close()
	m.wg.Wait()
	return err
}
