#!/usr/bin/env bash
# loss-lab.sh — how TCP copes with loss: download a file from ustack's web
# server at 0%, 1%, 5% and 10% packet loss (both directions, 5 ms of delay
# each way), with Reno and with CUBIC congestion control, and print the time,
# the throughput, and how many segments the stack had to send again.
#
#   scripts/loss-lab.sh [SIZE_MB]      (default 4)
#
# Builds ustack (or takes $USTACK_BIN); runs as root in a network namespace of
# its own (sudo unshare -n); leaves nothing behind. Needs curl.
set -euo pipefail
size_mb=${1:-4}
losses=${USTACK_LAB_LOSSES:-"0% 1% 5% 10%"}

# shellcheck source-path=SCRIPTDIR source=lib/lab.sh
. "$(dirname "$0")/lib/lab.sh"
lab_enter "curl" "curl" USTACK_LAB_LOSSES

bytes=$((size_mb * 1000000))
json() { grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }
printf '%-6s %-6s %9s %12s %12s %9s\n' loss cc seconds "Mbit/s" retransmits timeouts
for loss in $losses; do
	for cc in reno cubic; do
		"$USTACK_BIN" up --no-ipv6 --quiet --serve http:80 --cc "$cc" --loss "$loss" --delay 5ms --seed 1 >"$work/out" 2>&1 &
		pid=$!
		for _ in $(seq 100); do grep -q "http on port 80" "$work/out" && break; sleep 0.05; done
		grep -q "http on port 80" "$work/out" || { cat "$work/out" >&2; exit 1; }
		read -r secs got < <(curl -sS --max-time 300 -o /dev/null -w '%{time_total} %{size_download}\n' "http://198.18.0.2/bytes?n=$bytes")
		((got == bytes)) || { echo "loss-lab.sh: $loss $cc: $got of $bytes bytes" >&2; exit 1; }
		stats=$("$USTACK_BIN" stats --json)
		kill -INT "$pid"
		wait "$pid"
		pid=
		awk -v l="$loss" -v c="$cc" -v s="$secs" -v b="$bytes" -v r="$(json retransmits <<<"$stats")" -v t="$(json timeouts <<<"$stats")" \
			'BEGIN { printf "%-6s %-6s %9.2f %12.1f %12d %9d\n", l, c, s, b * 8 / s / 1e6, r, t }'
	done
done
echo "(${size_mb} MB from ustack's http server with curl; loss on both directions, 5 ms delay each way, seed 1)"
