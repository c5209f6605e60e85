// Package fault injects faults into the link between the kernel and the
// userspace stack — `ustack up --loss 5% --delay 20ms …` — so that a learner
// can watch TCP recover from what IP does not promise. RFC 791 says it
// plainly: IP has "no mechanisms to augment end-to-end data reliability, flow
// control, sequencing" (section 1.2), and "does not provide a reliable
// communication facility. There are no acknowledgments either end-to-end or
// hop-by-hop. There is no error control for data, only a header checksum.
// There are no retransmissions." (section 1.4). Packets may be lost, damaged,
// duplicated, delayed and delivered out of order; TCP (RFC 9293) exists to
// turn that into a reliable byte stream. On a TUN link between two processes
// on one machine none of it happens by itself, so this package makes it
// happen.
//
// It sits in the link layer: the link endpoint (package stack) asks an
// Injector about every IP packet it reads from the TUN device (In, towards the
// stack) or writes to it (Out, towards the kernel) before it passes the packet
// on. What each fault models on a real wire:
//
//   - Loss: a packet that never arrives — a congested router's full queue, a
//     frame destroyed by noise, a Wi-Fi collision. TCP notices the gap from
//     duplicate ACKs (fast retransmit) or its retransmission timer.
//   - Corrupt: a bit flipped on the way, which the link layer's own CRC
//     missed. One random bit is flipped in the transport part of the packet,
//     which the TCP, UDP and ICMP checksums cover, so the receiver drops it
//     and it becomes a loss the receiver counts as a checksum error; a packet
//     with nothing after its IP header has the bit flipped in its IPv4 header,
//     which the header checksum covers. IPv6 has no header checksum: a bit
//     flipped in an IPv6 header with nothing after it goes unnoticed. UDP over
//     IPv4 may go without a checksum (a zero field, RFC 768): corruption of
//     such a datagram is delivered as it is, as on a real wire.
//   - Duplicate: a packet that arrives twice — a link layer that retransmitted
//     a frame whose acknowledgment it lost. TCP drops the second copy by its
//     sequence number and answers with a duplicate ACK.
//   - Reorder: a packet overtaken by the next two — packets spread over
//     parallel links or paths. The receiver sees a hole, sends duplicate
//     ACKs (RFC 5681 section 3.2), and the sender may retransmit needlessly:
//     two duplicates are one short of fast retransmit's three.
//   - Delay and jitter: the propagation delay of a long path, varied per
//     packet by queues along the way. A larger round-trip time slows slow
//     start; jitter larger than the gap between packets also reorders them,
//     as with Linux's netem.
//   - Rate: a slower bottleneck link with a queue in front of it: a token
//     bucket without burst serializes the packets at Rate bits per second,
//     and when QueueLimit packets are waiting, a new one is tail-dropped. This
//     is where TCP's congestion control has work to do, and where a too-large
//     queue shows up as bufferbloat (a growing round-trip time).
//
// # Order
//
// For each packet: loss first (a lost packet is gone); then, if it goes on,
// corruption and duplication; then the timing: the rate limiter's queue
// (departure = max(now, the previous departure) + length·8/Rate), then the
// delay with its jitter on top of the departure — serialization, then
// propagation, as on a real link — then reordering, which holds the packet
// past that time until the next 2 packets of its direction have passed, or
// for 5 ms more, whichever is first. A duplicated
// packet that is held is released twice, one copy right after the other.
//
// # Determinism
//
// Each direction has its own random stream (PCG, math/rand/v2) seeded from
// Config.Seed and the direction. Every packet Decide sees while a fault
// applies to its direction takes exactly six values from that direction's
// stream, whatever the faults: so the decisions of a direction depend only on
// the seed and the sequence of packets of that direction (their lengths and
// IP headers pick the bit a corruption flips), not on the other direction,
// nor on timing. What does depend on the clock: which packets the rate
// limiter tail-drops (how full its queue is depends on when the packets
// came) or the hold caps refuse, the times at which held packets come out,
// and so the order of those that jitter lets overtake one another. Packets Decide sees while no
// fault applies to their direction take nothing from the stream. SetConfig
// keeps the streams going; a new non-zero seed restarts them.
//
// # Limits
//
// Everything held is in memory, and bounded: at most QueueLimit packets per
// direction wait for the rate limiter (DefaultQueueLimit, 1000, like a Linux
// interface's txqueuelen), and delayed, reordered and rate-limited packets of
// both directions together are at most MaxHeldPackets (65536) and MaxHeldBytes
// (64 MiB); a packet beyond those is dropped with "hold queue full" and counted
// as Lost. Delay and jitter are at most 10 s each, and a rate at least 8 kbit/s,
// so nothing is held for long. One goroutine releases the held packets of both
// directions, from a min-heap on a single timer; Close drops what is still
// held. The Injector works on single IP packets, never on a batch or a
// segmentation-offload superpacket.
package fault
