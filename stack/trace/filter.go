package trace

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Filter selects packets with a small tcpdump-like language:
//
//	primitives   tcp  udp  icmp (ICMP and ICMPv6)  ip (IPv4)  ip6
//	             [src|dst] port N    [src|dst] host ADDR    [src|dst] net CIDR
//	combinators  not  and  or  (also !  &&  ||), and parentheses
//
// not binds tighter than and, and than or. As in tcpdump, a protocol may be
// followed directly by a qualified primitive: "tcp port 5000" is "tcp and
// port 5000". A nil *Filter matches every packet.
type Filter struct {
	expr string
	root *node
}

// ParseFilter compiles expr. Its errors say what was expected where, by
// position in expr counting from 1.
func ParseFilter(expr string) (*Filter, error) {
	toks, err := lex(expr)
	if err != nil {
		return nil, fmt.Errorf("trace filter %q: %w", expr, err)
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("trace filter %q: empty expression", expr)
	}
	p := &parser{toks: toks, end: len(expr) + 1}
	root, err := p.or()
	if err == nil && p.i < len(p.toks) {
		err = p.unexpected(p.toks[p.i])
	}
	if err != nil {
		return nil, fmt.Errorf("trace filter %q: %w", expr, err)
	}
	return &Filter{expr: expr, root: root}, nil
}

// String returns the expression the filter was parsed from.
func (f *Filter) String() string {
	if f == nil {
		return ""
	}
	return f.expr
}

// Match tells whether the raw IP packet data passes the filter. A packet too
// short to tell fails the primitives it cannot answer.
func (f *Filter) Match(data []byte) bool {
	if f == nil {
		return true
	}
	fa := factsOf(data)
	return f.root.match(&fa)
}

// op is a node's kind.
type op uint8

const (
	opAnd op = iota
	opOr
	opNot
	opProto // tcp, udp, icmp
	opVersion
	opPort
	opHost
	opNet
)

// Which end of the packet a port, host or net primitive looks at.
const (
	either = iota
	srcOnly
	dstOnly
)

type node struct {
	op     op
	l, r   *node
	dir    int
	protos [2]uint8 // opProto: the protocol numbers that match (ICMP has two)
	n      int      // opVersion: 4 or 6; opPort: the port
	addr   netip.Addr
	prefix netip.Prefix
}

// facts are what the primitives ask of a packet.
type facts struct {
	version    int
	src, dst   netip.Addr
	proto      uint8
	hasProto   bool
	hasPorts   bool
	sport, dpt uint16
}

// factsOf reads the facts of an IP packet, as far as its bytes allow.
func factsOf(data []byte) facts {
	var fa facts
	var rest []byte
	switch header.IPVersion(data) {
	case header.IPv4Version:
		if len(data) < header.IPv4MinimumSize {
			return fa
		}
		ip := header.IPv4(data)
		ihl := int(ip.HeaderLength())
		if ihl < header.IPv4MinimumSize || ihl > len(data) {
			return fa
		}
		fa.version = 4
		fa.src = netip.AddrFrom4([4]byte(ip.SourceAddressSlice()))
		fa.dst = netip.AddrFrom4([4]byte(ip.DestinationAddressSlice()))
		fa.proto, fa.hasProto = ip.Protocol(), true
		if ip.FragmentOffset() == 0 {
			rest = data[ihl:]
		}
	case header.IPv6Version:
		if len(data) < header.IPv6MinimumSize {
			return fa
		}
		ip := header.IPv6(data)
		fa.version = 6
		fa.src = netip.AddrFrom16([16]byte(ip.SourceAddressSlice()))
		fa.dst = netip.AddrFrom16([16]byte(ip.DestinationAddressSlice()))
		w := walkIPv6(data, ip.NextHeader(), len(data))
		if w.problem != "" {
			return fa
		}
		fa.proto, fa.hasProto = w.proto, true
		if w.fragOff == 0 {
			rest = data[w.off:]
		}
	default:
		return fa
	}
	switch tcpip.TransportProtocolNumber(fa.proto) {
	case header.TCPProtocolNumber, header.UDPProtocolNumber:
		if len(rest) >= 4 {
			u := header.UDP(rest) // both headers start with the ports
			fa.sport, fa.dpt, fa.hasPorts = u.SourcePort(), u.DestinationPort(), true
		}
	}
	return fa
}

func (n *node) match(fa *facts) bool {
	switch n.op {
	case opAnd:
		return n.l.match(fa) && n.r.match(fa)
	case opOr:
		return n.l.match(fa) || n.r.match(fa)
	case opNot:
		return !n.l.match(fa)
	case opProto:
		return fa.hasProto && (fa.proto == n.protos[0] || fa.proto == n.protos[1])
	case opVersion:
		return fa.version == n.n
	case opPort:
		return fa.hasPorts && n.either(int(fa.sport) == n.n, int(fa.dpt) == n.n)
	case opHost:
		return fa.version != 0 && n.either(fa.src == n.addr, fa.dst == n.addr)
	case opNet:
		return fa.version != 0 && n.either(n.prefix.Contains(fa.src), n.prefix.Contains(fa.dst))
	}
	return false
}

// either combines what the source and the destination answered, per the
// node's src or dst qualifier.
func (n *node) either(src, dst bool) bool {
	switch n.dir {
	case srcOnly:
		return src
	case dstOnly:
		return dst
	}
	return src || dst
}

// token is one word or symbol of an expression, at pos counting from 1.
type token struct {
	text string
	pos  int
}

// lex splits expr into words and the symbols ( ) ! && ||.
func lex(expr string) ([]token, error) {
	var toks []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')' || c == '!':
			toks = append(toks, token{expr[i : i+1], i + 1})
			i++
		case c == '&' || c == '|':
			if i+1 < len(expr) && expr[i+1] == c {
				toks = append(toks, token{expr[i : i+2], i + 1})
				i += 2
				continue
			}
			return nil, fmt.Errorf("unexpected %q at position %d (did you mean %q?)", string(c), i+1, string([]byte{c, c}))
		default:
			j := i
			for j < len(expr) && !strings.ContainsRune(" \t\n\r()!&|", rune(expr[j])) {
				j++
			}
			toks = append(toks, token{expr[i:j], i + 1})
			i = j
		}
	}
	return toks, nil
}

// parser is a recursive descent over the tokens:
//
//	or      = and { ("or" | "||") and }
//	and     = unary { ("and" | "&&") unary }
//	unary   = ("not" | "!") unary | primary
//	primary = "(" or ")" | proto [qualified] | qualified
//	qualified = ["src" | "dst"] ("port" N | "host" ADDR | "net" CIDR)
type parser struct {
	toks []token
	i    int
	end  int // the position just past the expression
}

func (p *parser) peek() (token, bool) {
	if p.i < len(p.toks) {
		return p.toks[p.i], true
	}
	return token{pos: p.end}, false
}

// word is a token's text as a keyword.
func word(t token) string { return strings.ToLower(t.text) }

func (p *parser) unexpected(t token) error {
	return fmt.Errorf("unexpected %q at position %d", t.text, t.pos)
}

func (p *parser) or() (*node, error) {
	l, err := p.and()
	for err == nil {
		t, ok := p.peek()
		if !ok || (word(t) != "or" && t.text != "||") {
			break
		}
		p.i++
		if err = p.needOperand(t); err != nil {
			break
		}
		var r *node
		if r, err = p.and(); err == nil {
			l = &node{op: opOr, l: l, r: r}
		}
	}
	return l, err
}

func (p *parser) and() (*node, error) {
	l, err := p.unary()
	for err == nil {
		t, ok := p.peek()
		if !ok || (word(t) != "and" && t.text != "&&") {
			break
		}
		p.i++
		if err = p.needOperand(t); err != nil {
			break
		}
		var r *node
		if r, err = p.unary(); err == nil {
			l = &node{op: opAnd, l: l, r: r}
		}
	}
	return l, err
}

// needOperand fails when the expression ends after the operator op.
func (p *parser) needOperand(op token) error {
	if _, ok := p.peek(); !ok {
		return fmt.Errorf("%q needs an expression after it at position %d", op.text, p.end)
	}
	return nil
}

func (p *parser) unary() (*node, error) {
	t, ok := p.peek()
	if !ok {
		return nil, fmt.Errorf("expected an expression at position %d", p.end)
	}
	if word(t) == "not" || t.text == "!" {
		p.i++
		if err := p.needOperand(t); err != nil {
			return nil, err
		}
		n, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &node{op: opNot, l: n}, nil
	}
	return p.primary()
}

func (p *parser) primary() (*node, error) {
	t, _ := p.peek()
	switch w := word(t); w {
	case "(":
		p.i++
		if err := p.needOperand(t); err != nil {
			return nil, err
		}
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		c, ok := p.peek()
		if !ok {
			return nil, fmt.Errorf("%q at position %d is never closed: missing \")\" at position %d", "(", t.pos, p.end)
		}
		if c.text != ")" {
			return nil, p.unexpected(c)
		}
		p.i++
		return n, nil
	case "tcp", "udp", "icmp", "ip", "ip6":
		p.i++
		n := protoNode(w)
		// tcpdump's "tcp port 80": a qualified primitive right after.
		if next, ok := p.peek(); ok && isQualifier(word(next)) {
			q, err := p.qualified()
			if err != nil {
				return nil, err
			}
			n = &node{op: opAnd, l: n, r: q}
		}
		return n, nil
	}
	if isQualifier(word(t)) {
		return p.qualified()
	}
	return nil, p.unexpected(t)
}

func isQualifier(w string) bool {
	switch w {
	case "src", "dst", "port", "host", "net":
		return true
	}
	return false
}

func protoNode(w string) *node {
	switch w {
	case "tcp":
		return &node{op: opProto, protos: [2]uint8{uint8(header.TCPProtocolNumber), uint8(header.TCPProtocolNumber)}}
	case "udp":
		return &node{op: opProto, protos: [2]uint8{uint8(header.UDPProtocolNumber), uint8(header.UDPProtocolNumber)}}
	case "icmp":
		return &node{op: opProto, protos: [2]uint8{uint8(header.ICMPv4ProtocolNumber), uint8(header.ICMPv6ProtocolNumber)}}
	case "ip":
		return &node{op: opVersion, n: 4}
	}
	return &node{op: opVersion, n: 6}
}

// qualified parses ["src" | "dst"] ("port" N | "host" ADDR | "net" CIDR).
func (p *parser) qualified() (*node, error) {
	t, _ := p.peek()
	p.i++
	n := &node{dir: either}
	if w := word(t); w == "src" || w == "dst" {
		if w == "src" {
			n.dir = srcOnly
		} else {
			n.dir = dstOnly
		}
		k, ok := p.peek()
		if !ok || (word(k) != "port" && word(k) != "host" && word(k) != "net") {
			return nil, fmt.Errorf("%q needs \"port\", \"host\" or \"net\" after it%s", t.text, p.where(k, ok))
		}
		t = k
		p.i++
	}
	arg, ok := p.peek()
	if ok && isKeyword(arg) {
		ok = false // "port and …": the argument is missing, not "and"
	}
	var err error
	switch word(t) {
	case "port":
		n.op = opPort
		n.n, err = strconv.Atoi(arg.text)
		if !ok || err != nil || n.n < 1 || n.n > 65535 {
			return nil, fmt.Errorf("%q needs a number 1-65535%s", t.text, p.where(arg, ok))
		}
	case "host":
		n.op = opHost
		n.addr, err = netip.ParseAddr(arg.text)
		if !ok || err != nil || n.addr.Zone() != "" {
			return nil, fmt.Errorf("%q needs an IP address%s", t.text, p.where(arg, ok))
		}
		n.addr = n.addr.Unmap()
	case "net":
		n.op = opNet
		n.prefix, err = netip.ParsePrefix(arg.text)
		if !ok || err != nil {
			return nil, fmt.Errorf("%q needs a prefix like 198.18.0.0/15 or fd75::/64%s", t.text, p.where(arg, ok))
		}
		n.prefix = n.prefix.Masked()
		if n.prefix.Addr().Is4In6() && n.prefix.Bits() >= 96 {
			n.prefix = netip.PrefixFrom(n.prefix.Addr().Unmap(), n.prefix.Bits()-96)
		}
	}
	p.i++
	return n, nil
}

// isKeyword tells whether t is a combinator or a symbol, which cannot be an
// argument.
func isKeyword(t token) bool {
	switch word(t) {
	case "and", "or", "not", "&&", "||", "!", "(", ")":
		return true
	}
	return false
}

// where tells what was found instead, and where.
func (p *parser) where(t token, ok bool) string {
	if !ok {
		return " at position " + strconv.Itoa(t.pos)
	}
	return fmt.Sprintf(", not %q, at position %d", t.text, t.pos)
}
