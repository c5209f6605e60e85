#!/usr/bin/env bash
# rack-lab.sh — why ustack keeps RACK-TLP loss detection (RFC 8985) on: send
# the same lines through the ACK server at 2% and 10% loss (both directions,
# 2 ms of delay each way) with --rack on and --rack off, for a few seeds, and
# print how long each took — or that it had not finished when the time limit
# ran out.
#
#   scripts/rack-lab.sh [SIZE_KB] [LIMIT_S]      (default 1500 KB, 60 s)
#
# Builds ustack (or takes $USTACK_BIN); runs as root in a network namespace of
# its own (sudo unshare -n); leaves nothing behind. Exits non-zero if a run
# with RACK on did not finish (the default must always finish).
set -euo pipefail
size_kb=${1:-1500}
limit=${2:-60}
losses=${USTACK_RACK_LOSSES:-"2% 10%"}
seeds=${USTACK_RACK_SEEDS:-"1 2 3"}
modes=${USTACK_RACK_MODES:-"on off"}

# shellcheck source-path=SCRIPTDIR source=lib/lab.sh
. "$(dirname "$0")/lib/lab.sh"
lab_enter "nc base64" "netcat-openbsd coreutils" USTACK_RACK_LOSSES USTACK_RACK_SEEDS USTACK_RACK_MODES

head -c $((size_kb * 1000)) /dev/urandom | base64 >"$work/data"
want=$(($(wc -c <"$work/data") + 5 * $(wc -l <"$work/data"))) # each line comes back as "ACK: <line>"
failed=0
printf '%-6s %-5s %-5s %s\n' loss rack seed result
for loss in $losses; do
	for rack in $modes; do
		for seed in $seeds; do
			"$USTACK_BIN" up --no-ipv6 --quiet --control off --loss "$loss" --delay 2ms --rack "$rack" --seed "$seed" >"$work/out" 2>&1 &
			pid=$!
			for _ in $(seq 100); do grep -q "TCP Server running" "$work/out" && break; sleep 0.05; done
			t0=$(date +%s%N)
			got=$(timeout "$limit" nc -N 198.18.0.2 5000 <"$work/data" | wc -c || true)
			t1=$(date +%s%N)
			kill -INT "$pid"
			wait "$pid" || true
			pid=
			if ((got == want)); then
				result=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f s", ns / 1e9 }')
			else
				result="not finished after ${limit} s ($got of $want bytes back)"
				[[ $rack == on ]] && failed=1
			fi
			printf '%-6s %-5s %-5s %s\n' "$loss" "$rack" "$seed" "$result"
		done
	done
done
echo "(${size_kb} KB of base64 lines through the ACK server and back; loss both ways, 2 ms delay each way)"
exit $failed
