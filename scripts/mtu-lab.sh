#!/usr/bin/env bash
# mtu-lab.sh — a narrow hop in the middle: path MTU discovery and MSS clamping.
# The lab's network namespace is a router between ustack (ustack0, MTU 1500)
# and a host namespace; the router's link toward the host carries at most 1280
# bytes (MTU 1280 on the router's end of the veth: think of a tunnel), which
# neither end knows — the host's own link is 1500, so it announces MSS 1460.
# The host downloads a file from ustack's web server with curl (every packet
# 1 ms late each way, --delay 1ms, so that the ICMP comes back after netstack
# sent its first window, as on any real path):
#   1. as it is, on two connections: netstack's full-size segments (DF set) are
#      dropped by the router, which answers with ICMP "fragmentation needed,
#      mtu 1280"; netstack lowers its segment size and resends (path MTU
#      discovery) — and learns it again on the next connection
#   2. with `ustack up --mss 1200`: netstack announces MSS 1200 — and still
#      sends full-size segments: the same ICMP, the same timeouts
#   3. with the host announcing MSS 1200 (ip route … advmss 1200: what a
#      router's MSS clamping writes into the SYN): segments fit, no ICMP
# Prints, per case, the bytes, the time, the ICMP messages netstack received,
# its retransmission timeouts and the size of its first and of most of its
# data packets, and the trace lines that tell why; checks the byte counts, the
# ICMP and the packet sizes.
#
#   scripts/mtu-lab.sh [SIZE_MB]      (default 2)
#
# Builds ustack (or takes $USTACK_BIN); runs as root in a network namespace of
# its own (sudo unshare -n), with the host namespace inside it held by a
# process of the script (no name under /run/netns); leaves nothing behind.
# Needs curl, setpriv and nsenter.
set -euo pipefail
size_mb=${1:-2}

# shellcheck source-path=SCRIPTDIR source=lib/lab.sh
. "$(dirname "$0")/lib/lab.sh"
lab_enter "nsenter setpriv curl sysctl" "curl procps"
# The host: a namespace inside the lab's (see lab_host_netns); host COMMAND
# runs COMMAND there.
lab_host_netns

# host (to-router, 198.18.10.2, mtu 1500) ←veth→ (to-host, 198.18.10.1, mtu 1280) router ── ustack0 (mtu 1500) ── netstack 198.18.0.2
[[ $(readlink "/proc/$hostpid/ns/net") == "$host_ns" ]] || fail "the host namespace is gone"
ip link add to-host mtu 1280 type veth peer name to-router netns "$hostpid"
ip addr add 198.18.10.1/24 dev to-host
ip link set to-host up
host ip link set lo up
host ip addr add 198.18.10.2/24 dev to-router
host ip link set to-router up
host ip route add 198.18.0.0/24 via 198.18.10.1
sysctl -q -w net.ipv4.ip_forward=1

bytes=$((size_mb * 1000000))
json() { grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }

# up FLAGS...: start ustack's web server, tracing ICMP and the HTTP connections.
up() {
	: >"$work/up.out"
	"$USTACK_BIN" up --no-ipv6 --quiet --serve http:80 --delay 1ms --trace --trace-filter 'icmp or port 80' "$@" >"$work/up.out" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		grep -q "http on port 80" "$work/up.out" && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	cat "$work/up.out" >&2
	fail "ustack up $* did not start"
}
down() {
	kill -INT "$pid"
	wait "$pid"
	pid=
}

rows=()
# transfer NAME: one download from the host; appends a row, sets icmp (ICMP
# messages netstack received during it), first and usual (the IP length of its
# first data packet, and of most of them).
transfer() {
	local name=$1 s0 s1 secs got rto
	s0=$("$USTACK_BIN" stats --json)
	mark=$(wc -l <"$work/up.out")
	host curl -sS --max-time 15 -o /dev/null -w '%{time_total} %{size_download}\n' "http://198.18.0.2/bytes?n=$bytes" >"$work/curl" || true
	read -r secs got <"$work/curl" || true
	((${got:-0} == bytes)) || fail "$name: ${got:-0} of $bytes bytes (stalled?)"
	sleep 0.2 # the trace is written asynchronously
	s1=$("$USTACK_BIN" stats --json)
	icmp=$(($(json v4_in <<<"$s1") - $(json v4_in <<<"$s0")))
	rto=$(($(json timeouts <<<"$s1") - $(json timeouts <<<"$s0")))
	# The IP length of netstack's first data packet, and the most common one.
	read -r first usual < <(tail -n +"$((mark + 1))" "$work/up.out" | awk '
		/^← out .* TCP 80 → .* bytes\)/ { for (i = 1; i < NF; i++) if ($i == "len") { l = $(i + 1) + 0; break }
			if (!f) f = l
			if (++c[l] > c[m]) m = l }
		END { print f + 0, m + 0 }')
	tail -n +"$((mark + 1))" "$work/up.out" >"$work/trace"
	rows+=("$(printf '%-32s %9d %8.2f %8d %5d %10d %8d' "$name" "$got" "$secs" "$icmp" "$rto" "$first" "$usual")")
}

# 1. No clamping: path MTU discovery, on two connections in a row.
up
transfer "1. as it is, 1st connection"
icmp1=$icmp usual1=$usual
icmp_line=$(grep -m1 "ICMP destination unreachable" "$work/trace" || true)
resent=$(grep -m1 "TCP 80 → .* seq 1:.*\[retransmission\]" "$work/trace" || true)
transfer "   as it is, 2nd connection"
icmp1b=$icmp
down
((icmp1 > 0)) || fail "case 1: no ICMP reached netstack: did the router not drop the 1500-byte packets?"
[[ $icmp_line == *"fragmentation needed mtu 1280"* ]] || fail "case 1: the ICMP was not fragmentation needed, mtu 1280: $icmp_line"
((usual1 > 0 && usual1 <= 1280)) || fail "case 1: most of netstack's packets were $usual1 bytes, more than the path's 1280"
((icmp1b > 0)) || fail "case 1: the 2nd connection needed no ICMP: does netstack cache the path MTU now?"

# 2. ustack's own --mss.
up --mss 1200
transfer "2. ustack up --mss 1200"
icmp2=$icmp
synack=$(grep -m1 "SYN-ACK" "$work/trace" || true)
down
[[ $synack == *" mss 1200 "* ]] || fail "case 2: netstack's SYN-ACK did not announce mss 1200: $synack"
((icmp2 > 0)) || fail "case 2: no ICMP with --mss 1200: netstack now caps what it sends too (update docs/labs.md)"

# 3. The host announces MSS 1200, as a router clamping MSS would make it.
host ip route replace 198.18.0.0/24 via 198.18.10.1 advmss 1200
up
transfer "3. the host announces mss 1200"
icmp3=$icmp first3=$first usual3=$usual
syn=$(grep -m1 "TCP .* → 80 SYN " "$work/trace" || true)
down
[[ $syn == *" mss 1200 "* ]] || fail "case 3: the host's SYN did not announce mss 1200: $syn"
((icmp3 == 0)) || fail "case 3: $icmp3 ICMP messages with MSS 1200"
((first3 > 0 && first3 <= 1280 && usual3 <= 1280)) || fail "case 3: netstack sent $first3-byte packets"

echo "host ── router (its link to the host: mtu 1280) ── ustack0 (mtu 1500) ── netstack; $size_mb MB from http://198.18.0.2/bytes with curl, on the host"
echo
printf '%-32s %9s %8s %8s %5s %10s %8s\n' case bytes seconds "ICMP in" RTOs "1st packet" "most"
printf '%s\n' "${rows[@]}"
echo "(ICMP in: messages netstack received; RTOs: its retransmission timeouts; 1st packet, most: the IP length of its first data packet, and of most of them)"
echo
echo "1. the router's answer to netstack's first, too big, segments:"
echo "   $icmp_line"
echo "   netstack's first segment, resent at the new size:"
echo "   $resent"
echo "2. netstack's SYN-ACK with --mss 1200 (it announces 1200, but sends what the host's SYN allowed):"
echo "   $synack"
echo "3. the host's SYN with advmss 1200 on its route:"
echo "   $syn"
