#!/usr/bin/env bash
# router.sh — a kernel router between a host and ustack, and traceroute's
# trick: the lab's network namespace is the router (ip_forward=1); it runs
# `ustack up --trace` (ustack0, the userspace stack at 198.18.0.2) and is
# joined by a veth pair to a second namespace, the host, whose only way to
# 198.18.0.0/24 is a route via the router. From the host, nc talks to the ACK
# server (kernel TCP → kernel forwarding → netstack); then ping sends echo
# requests with TTL 1 and TTL 2: the first expires at the router, which answers
# "Time to live exceeded" and never passes it on (ustack's trace shows
# nothing), the second reaches ustack with TTL 1 left (the router took one).
# Prints the path, the replies and the trace lines, and checks them.
#
#   scripts/router.sh
#
# Builds ustack (or takes $USTACK_BIN); runs as root in a network namespace of
# its own (sudo unshare -n), with the host namespace inside it held by a
# process of the script (no name under /run/netns); leaves nothing behind.
# Needs nc, ping, setpriv and nsenter.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/lab.sh
. "$(dirname "$0")/lib/lab.sh"
lab_enter "nsenter setpriv nc ping sysctl" "netcat-openbsd iputils-ping procps"
# The host: a namespace inside the lab's (see lab_host_netns); host COMMAND
# runs COMMAND there.
lab_host_netns

# host (to-router, 198.18.10.2) ←veth→ (to-host, 198.18.10.1) router ── ustack0 ── netstack 198.18.0.2
[[ $(readlink "/proc/$hostpid/ns/net") == "$host_ns" ]] || fail "the host namespace is gone"
ip link add to-host type veth peer name to-router netns "$hostpid"
ip addr add 198.18.10.1/24 dev to-host
ip link set to-host up
host ip link set lo up
host ip addr add 198.18.10.2/24 dev to-router
host ip link set to-router up
host ip route add 198.18.0.0/24 via 198.18.10.1
sysctl -q -w net.ipv4.ip_forward=1

: >"$work/up.out"
"$USTACK_BIN" up --no-ipv6 --trace --trace-filter ip >"$work/up.out" 2>&1 &
pid=$!
for _ in $(seq 100); do
	grep -q "TCP Server running" "$work/up.out" && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.05
done
grep -q "TCP Server running" "$work/up.out" || { cat "$work/up.out" >&2; fail "ustack up did not start"; }

# snmp PROTO: FIELD: a counter of the kernel of this namespace (the router).
snmp() { awk -v p="$1" -v f="$2" '$1 == p { if (!n) { for (i = 2; i <= NF; i++) if ($i == f) n = i } else print $n }' /proc/net/snmp; }
# wait_trace PATTERN: the trace is written asynchronously; wait for a line.
wait_trace() {
	for _ in $(seq 40); do
		grep -q -- "$1" "$work/up.out" && return 0
		sleep 0.05
	done
	return 1
}

echo "host 198.18.10.2 ── veth ── router 198.18.10.1 (ip_forward=1) ── ustack0 198.18.0.1 ── userspace stack 198.18.0.2"
echo "the host's route:  $(host ip route get 198.18.0.2 | head -1 | sed 's/ *uid.*//;s/ *$//')"
echo

# 1. The kernel's TCP in the host, through the router's kernel, to netstack.
got=$(echo "hello from the host" | host timeout 10 nc -N -w 5 198.18.0.2 5000) || true
[[ $got == "ACK: hello from the host" ]] || fail "nc from the host answered \"$got\""
wait_trace "198.18.10.2 → 198.18.0.2 ttl 63 .* SYN " || { cat "$work/up.out" >&2; fail "no SYN with ttl 63 in the trace"; }
seen=$(grep -m1 "Client connected: " "$work/up.out") || fail "ustack did not log the client"
[[ $seen == "Client connected: 198.18.10.2 "* ]] || fail "ustack saw \"$seen\", not the host's address"
echo "1. host: nc 198.18.0.2 5000 → $got"
echo "   ustack's log:   $seen"
echo "   ustack's trace: $(grep -m1 "ttl 63 .* SYN " "$work/up.out")"
echo "   (the host sent it with ttl 64; the router took one)"
echo

# 2. traceroute by hand: one echo request with TTL 1, one with TTL 2.
echo "2. host: ping -t 1 198.18.0.2, then ping -t 2 198.18.0.2"
te0=$(snmp Icmp: OutTimeExcds)
p1=$(host timeout 5 ping -n -c 1 -W 2 -t 1 198.18.0.2 2>&1) || true
hop1=$(grep -m1 "Time to live exceeded" <<<"$p1") || { echo "$p1" >&2; fail "ping -t 1 got no Time to live exceeded"; }
[[ $hop1 == "From 198.18.10.1 "* ]] || fail "the Time to live exceeded did not come from the router: $hop1"
sleep 0.2 # a trace line of the probe, if any, would be there by now
if grep -q "ICMP echo request" "$work/up.out"; then
	grep "ICMP" "$work/up.out" >&2
	fail "the TTL-1 probe reached ustack"
fi
te=$(($(snmp Icmp: OutTimeExcds) - te0))
((te == 1)) || fail "the router sent $te ICMP Time Exceeded, not 1"
echo "   ttl 1: $hop1"
echo "          sent by the router's kernel (Icmp OutTimeExcds +$te); ustack's trace shows nothing: the probe never got past the router"

p2=$(host timeout 5 ping -n -c 1 -W 2 -t 2 198.18.0.2 2>&1) || { echo "$p2" >&2; fail "ping -t 2 got no reply"; }
hop2=$(grep -m1 "bytes from 198.18.0.2" <<<"$p2") || { echo "$p2" >&2; fail "ping -t 2: no reply line"; }
wait_trace "ICMP echo reply" || { cat "$work/up.out" >&2; fail "no echo reply in the trace"; }
req=$(grep -m1 "ICMP echo request" "$work/up.out")
rep=$(grep -m1 "ICMP echo reply" "$work/up.out")
[[ $req == *"198.18.10.2 → 198.18.0.2 ttl 1 "* ]] || fail "the TTL-2 probe reached ustack as \"$req\", not with ttl 1"
echo "   ttl 2: $hop2"
echo "          ustack's trace:"
echo "          $req"
echo "          $rep"
cat <<'EOF'

Every router decrements the TTL of the packets it forwards, and drops the one
whose TTL reaches 0, telling the sender with an ICMP Time Exceeded from its own
address: sending probes with TTL 1, 2, 3… names every router on the path
(traceroute). The TTL-2 probe arrived at netstack with ttl 1; netstack answered
it with a fresh ttl 64, which the router brought down to 63 on the way back.
EOF
