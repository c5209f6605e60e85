// Package trace is `ustack --trace`: it turns every packet the link endpoint
// saw cross the TUN device into one line that names its layers, in the words of
// the seed article's four-layer picture — the internet layer (IP) first, then
// the transport layer (TCP, UDP, ICMP), then what the packet means to the
// connection it belongs to:
//
//	→ in   IPv4 198.18.0.1 → 198.18.0.2 ttl 64 len 60 | TCP 43512 → 5000 SYN seq 0 win 64240 mss 1460 sack-ok wscale 7 ts   [handshake 1/3: Client → SYN → Server]
//	← out  IPv4 198.18.0.2 → 198.18.0.1 ttl 64 len 44 | TCP 5000 → 43512 SYN-ACK seq 0 ack 1 win 65535 mss 1460   [handshake 2/3: Server → SYN-ACK → Client] state SYN-RCVD
//
// It sits beside the link layer, not in the data path: package stack publishes
// each packet on a tap.Bus (package tap), and the tracer consumes them from its
// own queue, one goroutine owning one Tracer. "in" is a packet the kernel routed
// into the TUN interface, towards the userspace stack; "out" is one the stack
// wrote, towards the kernel. The tracer sees only what crossed the wire, so the
// TCP state it prints for the stack's endpoint is the RFC 9293 state machine
// replayed on those segments, not netstack's own variable.
//
// Decoding uses gVisor's wire-format package, gvisor.dev/gvisor/pkg/tcpip/header
// — the same accessors netstack itself reads packets with — and checks every
// length before it calls one, since they index the slice unchecked. The fields
// decoded, and where they are defined:
//   - IPv4, RFC 791 section 3.1: version, IHL, type of service, total length,
//     identification, flags (DF, MF), fragment offset, time to live, protocol,
//     header checksum, addresses.
//   - IPv6, RFC 8200 sections 3 and 4: traffic class, flow label, payload length,
//     next header, hop limit, addresses, and the chain of extension headers
//     (hop-by-hop, routing, fragment, destination options; authentication from
//     RFC 4302), fragments shown without reassembly.
//   - TCP, RFC 9293 section 3.1: ports, sequence and acknowledgment numbers,
//     data offset, control bits, window, checksum, urgent pointer; options from
//     section 3.2 (MSS) and RFC 7323 (window scale, timestamps) and RFC 2018
//     (SACK).
//   - UDP, RFC 768: ports, length, checksum.
//   - ICMP, RFC 792, and ICMPv6, RFC 4443 (with neighbor discovery from RFC 4861
//     and MLD from RFC 2710 and RFC 3810): type, code, checksum, and the fields
//     of the common messages.
//
// Sequence numbers are relative, as tcpdump and Wireshark show them: each
// side's initial sequence number counts as 0. A packet that does not decode —
// truncated, a bad length field, an unknown IP version — prints as "malformed"
// with the reason; a bad checksum prints as a note at the end of an otherwise
// decoded line, and such a segment, which the receiver drops, changes no
// connection state. Nothing here panics on any input: FuzzLine checks it.
//
// Memory is bounded: at most 4096 connections are tracked, the least recently
// seen forgotten first, and a connection is forgotten a minute (of packet time)
// after both FINs were acknowledged or a RST crossed.
package trace
