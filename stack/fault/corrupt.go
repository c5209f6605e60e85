package fault

import (
	"encoding/binary"
	"math/bits"
)

const (
	ipv4MinHeader = 20 // RFC 791 section 3.1: IHL is at least 5 words
	ipv6Header    = 40 // RFC 8200 section 3: the fixed header
)

// corruptRegion returns the bytes of pkt in which a flipped bit is caught by a
// checksum the receiver verifies, as [start, end).
//
//   - IPv4 (RFC 791 section 3.1): the transport part, after IHL words of
//     header and up to Total Length — TCP (RFC 9293 section 3.1), UDP
//     (RFC 768) and ICMP (RFC 792) checksum all of it. A packet with nothing
//     after its header: the header, which the header checksum covers.
//   - IPv6 (RFC 8200 section 3): what follows the fixed 40-byte header, up to
//     Payload Length; the transport checksums cover it (UDP's is mandatory
//     over IPv6, RFC 8200 section 8.1). With nothing after it: the fixed
//     header, which no checksum covers — IPv6 has none — so such a packet
//     may arrive with a wrong address or hop limit.
//   - Anything else (not IP, or a header length that does not fit): the
//     whole packet.
func corruptRegion(pkt []byte) (start, end int) {
	end = len(pkt)
	if len(pkt) == 0 {
		return 0, 0
	}
	switch pkt[0] >> 4 {
	case 4:
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < ipv4MinHeader || ihl > len(pkt) {
			return 0, end
		}
		if len(pkt) >= 4 {
			if tl := int(binary.BigEndian.Uint16(pkt[2:4])); tl >= ihl && tl < end {
				end = tl
			}
		}
		if end == ihl {
			return 0, ihl
		}
		return ihl, end
	case 6:
		if len(pkt) < ipv6Header {
			return 0, end
		}
		// A Payload Length of 0 with more bytes behind it is a jumbogram
		// (RFC 2675): take the packet as it is.
		if pl := int(binary.BigEndian.Uint16(pkt[4:6])); pl > 0 && ipv6Header+pl < end {
			end = ipv6Header + pl
		}
		if end == ipv6Header {
			return 0, ipv6Header
		}
		return ipv6Header, end
	}
	return 0, end
}

// flipBit flips one bit of pkt's corruptRegion, picked by the random value u,
// and reports whether it flipped one (an empty packet has no bit to flip).
func flipBit(pkt []byte, u uint64) bool {
	start, end := corruptRegion(pkt)
	if end <= start {
		return false
	}
	// The high word of u·n is uniform over [0, n) (Lemire's multiply-shift).
	bit, _ := bits.Mul64(u, uint64(end-start)*8)
	pkt[start+int(bit/8)] ^= 1 << (bit % 8)
	return true
}
