#!/usr/bin/env bash
# two-stacks.sh — two userspace stacks behind one kernel, and a third that
# talks to both through the kernel's IP forwarding. Stack A (ustack up, on
# ustack0, 198.18.0.2) and stack B (ustack up --name ustack2, on ustack2,
# 198.18.2.2) each run the ACK server; the kernel reaches both with nc; then
# `ustack client` — stack C, on its own short-lived ustack1 at 198.18.1.2 —
# dials each of them, first with net.ipv4.ip_forward=0 (it times out), then
# with ip_forward=1 (the kernel routes ustack1 → ustack0 / ustack2 and back).
# Prints who talked to whom through what, and checks every reply.
#
#   scripts/two-stacks.sh
#
# Builds ustack (or takes $USTACK_BIN); runs as root in a network namespace of
# its own (sudo unshare -n): ip_forward is set in that namespace only; leaves
# nothing behind. Needs nc.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/lab.sh
. "$(dirname "$0")/lib/lab.sh"
lab_enter "nc sysctl" "netcat-openbsd procps"
pids=()
at_exit() {
	local p
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}

# start NAME ARGS...: ustack up in the background, until its server listens.
start() {
	local name=$1
	shift
	: >"$work/$name.out" # before the first grep: the background child opens it
	"$USTACK_BIN" up --no-ipv6 --name "$name" "$@" >"$work/$name.out" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do
		grep -q "TCP Server running" "$work/$name.out" && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || break
		sleep 0.05
	done
	cat "$work/$name.out" >&2
	fail "ustack up --name $name did not start"
}
# snmp FIELD: the kernel's IP counter FIELD (ForwDatagrams, InAddrErrors) in this namespace.
snmp() { awk -v f="$1" '$1 == "Ip:" { if (!n) { for (i = 2; i <= NF; i++) if ($i == f) n = i } else print $n }' /proc/net/snmp; }

start ustack0                                   # stack A: 198.18.0.1/24 ↔ 198.18.0.2
start ustack2 --addr 198.18.2.1/24              # stack B: 198.18.2.1/24 ↔ 198.18.2.2
cat <<EOF
stack A  ustack up                 ustack0   kernel 198.18.0.1/24  ↔  userspace stack 198.18.0.2, ACK server :5000
stack B  ustack up --name ustack2  ustack2   kernel 198.18.2.1/24  ↔  userspace stack 198.18.2.2, ACK server :5000
stack C  ustack client             ustack1   kernel 198.18.1.1/24  ↔  userspace stack 198.18.1.2 (for one run each)

EOF

# 1, 2. The kernel's own TCP (nc) to each stack: one hop, no forwarding.
step=0
for t in "A 198.18.0.2" "B 198.18.2.2"; do
	read -r s addr <<<"$t"
	got=$(echo "hello $s from the kernel" | timeout 10 nc -N -w 5 "$addr" 5000) || true
	[[ $got == "ACK: hello $s from the kernel" ]] || fail "nc $addr 5000 answered \"$got\""
	echo "$((++step)). the kernel's TCP (nc) → stack $s at $addr:5000"
	echo "   $got"
done

# 3. Stack C to stack A with forwarding off: the kernel may not pass packets
# from one interface to another, and drops them (counted in Ip InAddrErrors).
sysctl -q -w net.ipv4.ip_forward=0
drop0=$(snmp InAddrErrors)
if "$USTACK_BIN" client --via-no-ipv6 --timeout 2s 198.18.0.2:5000 "hello A" >"$work/c0.out" 2>&1; then
	cat "$work/c0.out" >&2
	fail "stack C reached stack A with ip_forward=0"
fi
grep -q "no answer within 2s" "$work/c0.out" || { cat "$work/c0.out" >&2; fail "stack C failed, but not with a timeout"; }
echo "$((++step)). stack C → stack A at 198.18.0.2:5000, with net.ipv4.ip_forward=0"
echo "   no answer within 2s: the kernel dropped the $(($(snmp InAddrErrors) - drop0)) packets it may not forward (Ip InAddrErrors)"

# 4, 5. The same with forwarding on (in this namespace only): ustack1 → kernel
# routing → ustack0 (or ustack2), and the replies the same way back.
sysctl -q -w net.ipv4.ip_forward=1
for t in "A 198.18.0.2 ustack0" "B 198.18.2.2 ustack2"; do
	read -r s addr dev <<<"$t"
	fwd0=$(snmp ForwDatagrams)
	"$USTACK_BIN" client --via-no-ipv6 "$addr:5000" "hello $s" "from stack C" >"$work/c.out" 2>&1 || { cat "$work/c.out" >&2; fail "stack C → stack $s failed"; }
	if ! grep -qx "Server says: ACK: hello $s" "$work/c.out" || ! grep -qx "Server says: ACK: from stack C" "$work/c.out"; then
		cat "$work/c.out" >&2
		fail "stack C → stack $s: wrong replies"
	fi
	fwd=$(($(snmp ForwDatagrams) - fwd0))
	((fwd > 0)) || fail "stack C → stack $s: the kernel forwarded nothing"
	# The server saw the client's own address: the kernel routed, it translated nothing.
	seen=$(grep -m1 "Client connected: 198.18.1.2 " "$work/$dev.out") || { cat "$work/$dev.out" >&2; fail "stack $s did not log stack C's address"; }
	echo "$((++step)). stack C → stack $s at $addr:5000, with ip_forward=1: ustack1 → kernel → $dev"
	grep "Server says" "$work/c.out" | sed 's/^/   /'
	echo "   the kernel forwarded $fwd packets between ustack1 and $dev (Ip ForwDatagrams); stack $s logged \"$seen\""
done
cat <<'EOF'

Three TCP/IP stacks in user space, one kernel between them: the kernel only
routed IP packets from one TUN interface to another (ip_forward=1); the
handshakes, sequence numbers and ACKs of both ends ran in netstack.
EOF
