#!/usr/bin/env bash
# tap-cost.sh — what each tap costs: the time to send ~32 MiB of lines through
# the ACK server with nc (and read the ACKs back), with every tap off and with
# --trace, --trace-filter, --pcap, --tcp-probe and all of them, interleaved
# over RUNS repetitions; prints the median and the range of each, the ratio to
# "off", and whether any tap skipped packets.
#
#   scripts/tap-cost.sh [RUNS]      (default 5)
#
# Builds ustack (or takes $USTACK_BIN); runs as root in a network namespace of
# its own (sudo unshare -n); leaves nothing behind.
set -euo pipefail
runs=${1:-5}
mib=${USTACK_TAPCOST_MIB:-24} # of random bytes, sent as base64 lines (4/3 as many)

# shellcheck source-path=SCRIPTDIR source=lib/lab.sh
. "$(dirname "$0")/lib/lab.sh"
lab_enter "nc" "netcat-openbsd" USTACK_TAPCOST_MIB

head -c $((mib << 20)) /dev/urandom | base64 >"$work/data"
want=$(wc -c <"$work/data")
back=$((want + 5 * $(wc -l <"$work/data"))) # each line comes back as "ACK: <line>"
configs=(off trace trace-filtered pcap tcp-probe all)
declare -A flags=(
	[off]=""
	[trace]="--trace"
	[trace-filtered]="--trace --trace-filter icmp"
	[pcap]="--pcap $work/p.pcap"
	[tcp-probe]="--tcp-probe $work/p.csv"
	[all]="--trace --pcap $work/p.pcap --tcp-probe $work/p.csv"
)
declare -A times skipped
for ((r = 1; r <= runs; r++)); do
	for c in "${configs[@]}"; do
		# shellcheck disable=SC2086
		"$USTACK_BIN" up --no-ipv6 --quiet ${flags[$c]} >"$work/out" 2>"$work/err" &
		pid=$!
		for _ in $(seq 100); do grep -q "TCP Server running" "$work/out" && break; sleep 0.05; done
		t0=$(date +%s%N)
		got=$(timeout 120 nc -N 198.18.0.2 5000 <"$work/data" | wc -c)
		t1=$(date +%s%N)
		# What the taps had to skip, from the running stack's counters.
		sk=$("$USTACK_BIN" stats --json | { grep -o '"dropped":[0-9]*' || true; } | cut -d: -f2 | awk '{s += $1} END {print s + 0}')
		kill -INT "$pid"
		wait "$pid"
		pid=
		((got == back)) || { echo "tap-cost.sh: $c: $got bytes back, want $back" >&2; cat "$work/err" >&2; exit 1; }
		times[$c]+="$(((t1 - t0) / 1000000)) "
		skipped[$c]=$((${skipped[$c]:-0} + sk))
		printf '\rrun %d/%d %-15s' "$r" "$runs" "$c" >&2
	done
done
printf '\r%40s\r' "" >&2

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)], a[1], a[NR]}'; }
read -r base _ _ < <(echo "${times[off]}" | median)
printf '%-15s %10s %15s %8s %10s\n' "taps" "median ms" "[min-max]" "vs off" "skipped"
for c in "${configs[@]}"; do
	read -r m lo hi < <(echo "${times[$c]}" | median)
	printf '%-15s %10s %15s %8s %10s\n' "$c" "$m" "[$lo-$hi]" "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2fx", a / b}')" "${skipped[$c]}"
done
echo "($(( want >> 20 )) MiB of 76-character lines each way through nc; $runs runs, interleaved)"
