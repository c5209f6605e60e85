#!/usr/bin/env bash
# cwnd-plot.sh — record a bulk transfer through ustack's TCP probe and draw
# its congestion window: the picture in the README.
#
#   scripts/cwnd-plot.sh [OUT.png|OUT.svg]     (default docs/cwnd.png)
#
# It builds ustack (or takes $USTACK_BIN), then, as root and in a network
# namespace of its own (sudo unshare -n), runs `ustack up --tcp-probe` on a
# link that loses 1% of packets each way with 2 ms of delay (so the picture
# has losses to recover from: $USTACK_PLOT_LOSS changes the loss), sends
# 2 MiB of base64 lines through the ACK server with nc, stops ustack and runs
# `ustack plot`. Nothing is left behind: the namespace ends with the script.
set -euo pipefail

out=${1:-docs/cwnd.png}
size_mib=${USTACK_PLOT_MIB:-2}
loss=${USTACK_PLOT_LOSS:-1%}

# shellcheck source-path=SCRIPTDIR source=lib/lab.sh
. "$(dirname "$0")/lib/lab.sh"
lab_enter "nc" "netcat-openbsd" USTACK_PLOT_MIB USTACK_PLOT_LOSS

"$USTACK_BIN" up --no-ipv6 --quiet --tcp-probe "$work/probe.csv" --loss "$loss" --delay 2ms --seed 1 >"$work/up.out" 2>&1 &
pid=$!
for _ in $(seq 100); do
	grep -q "TCP Server running" "$work/up.out" && break
	kill -0 "$pid" 2>/dev/null || { cat "$work/up.out" >&2; exit 1; }
	sleep 0.1
done
grep -q "TCP Server running" "$work/up.out" || { echo "cwnd-plot.sh: ustack up did not start" >&2; cat "$work/up.out" >&2; exit 1; }

echo "sending $size_mib MiB of lines through the ACK server at 198.18.0.2:5000 ..."
sent=$(head -c "$((size_mib << 20))" /dev/urandom | base64 | tee >(wc -c >"$work/sent") | timeout 120 nc -N 198.18.0.2 5000 | wc -l)
echo "$sent ACK lines back"

kill -INT "$pid"
wait "$pid"
pid=
"$USTACK_BIN" plot "$work/probe.csv" -o "$out" --title "ustack: cwnd of the ACK server's replies, ${size_mib} MiB at ${loss} loss"
