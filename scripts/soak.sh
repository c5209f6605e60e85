#!/usr/bin/env bash
# soak.sh — a long run of mixed traffic against one ustack, at 1% loss, that
# checks every byte and watches the process for leaks: short ACK sessions,
# bulk transfers through echo and discard, downloads from http and chargen,
# and pings, all at once, for DURATION; every ~10 s it samples `ustack stats
# --json` (goroutines, fds, RSS, endpoints) and prints a progress line.
#
#   scripts/soak.sh [DURATION]      (default 10m; 60s, 10m, 1h30m: h, m and s)
#
# It fails (exit status 1, with what went wrong) on any data mismatch or failed
# session — TCP must deliver everything despite the loss, so each client gets a
# generous timeout and there are no retries — on a chunk of pings with no
# reply at all, on ustack exiting early, and on growth: from the second
# quarter of the run to the last, the median RSS may grow by max(20%, 20 MiB),
# the median goroutines by 12 and the median fds by 2 (see "growth" below).
# USTACK_SOAK_CSV=FILE keeps the samples.
#
# Builds ustack (or takes $USTACK_BIN); runs as root in a network namespace of
# its own (sudo unshare -n); leaves nothing behind. Needs nc (netcat-openbsd),
# curl, ping, sha256sum and unshare.
set -euo pipefail
duration=${1:-10m}

if [[ -z ${USTACK_BIN:-} ]]; then
	cd "$(dirname "$0")/.."
	USTACK_BIN=$(mktemp -d)/ustack
	go build -o "$USTACK_BIN" ./cmd/ustack
	export USTACK_BIN
fi
if [[ $(id -u) != 0 ]]; then
	exec sudo --preserve-env=USTACK_BIN,USTACK_SOAK_CSV "$0" "$@"
fi
if [[ ${USTACK_SOAK_NETNS:-} != 1 ]]; then
	for pair in unshare:util-linux nc:netcat-openbsd curl:curl ping:iputils-ping sha256sum:coreutils timeout:coreutils ip:iproute2; do
		command -v "${pair%%:*}" >/dev/null || { echo "soak.sh: ${pair%%:*} is missing (apt-get install ${pair#*:})" >&2; exit 1; }
	done
	grep -q -- '-N' <<<"$(nc -h 2>&1)" || { echo "soak.sh: this nc has no -N: install netcat-openbsd" >&2; exit 1; }
	USTACK_SOAK_NETNS=1 exec unshare -n "$0" "$@"
fi

# From here on: root, in a fresh network namespace.
die() { echo "soak.sh: $*" >&2; exit 1; }

# A Go-style duration of whole hours, minutes and seconds, in seconds.
secs=0
rest=$duration
[[ $rest =~ ^([0-9]+[hms])+$ ]] || die "duration $duration: want something like 60s, 10m or 1h30m"
while [[ $rest =~ ^([0-9]+)([hms])(.*)$ ]]; do
	n=$((10#${BASH_REMATCH[1]}))
	case ${BASH_REMATCH[2]} in
	h) secs=$((secs + n * 3600)) ;;
	m) secs=$((secs + n * 60)) ;;
	s) secs=$((secs + n)) ;;
	esac
	rest=${BASH_REMATCH[3]}
done
((secs >= 20 && secs <= 86400)) || die "duration $duration: between 20s and 24h, please (the growth check compares quarters of the run)"

ip link set lo up
work=$(mktemp -d)
export USTACK_RUN_DIR=$work/run
stack=198.18.0.2
pid=
loops=()
cleanup() {
	local p
	touch "$work/stop"
	for p in "${loops[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${loops[@]}"; do wait "$p" 2>/dev/null || true; done
	if [[ -n $pid ]] && kill -INT "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; fi
	[[ -n ${USTACK_SOAK_CSV:-} && -f $work/samples.csv ]] && cp "$work/samples.csv" "$USTACK_SOAK_CSV"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Sample every 10 s, more often in a short run so that each quarter has
# several samples (at least ~40 in all).
interval=$((secs * 1000 / 40))
((interval <= 10000)) || interval=10000
((interval >= 500)) || interval=500
interval=$(awk -v ms="$interval" 'BEGIN { printf "%.3f", ms / 1000 }')

# RFC 864's pattern, which chargen and http's /bytes?n= send from its start:
# line n is the 72 printing characters from number n (mod 95) on, then CRLF.
max_dl=$((8 << 20))
awk -v want="$max_dl" 'BEGIN {
	for (c = 32; c < 127; c++) ring = ring sprintf("%c", c)
	ring = ring ring
	for (n = 0; have < want; n++) { printf "%s\r\n", substr(ring, n % 95 + 1, 72); have += 74 }
}' >"$work/pattern"

"$USTACK_BIN" up --no-ipv6 --quiet --serve ack:5000,echo:7,discard:9,chargen:19,http:80 --loss 1% --seed 1 >"$work/up.out" 2>&1 &
pid=$!
for _ in $(seq 100); do
	grep -q "http on port 80" "$work/up.out" && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
grep -q "http on port 80" "$work/up.out" || { cat "$work/up.out" >&2; die "ustack up did not start"; }

# The traffic loops, each in the background. Each stops at the deadline (and
# after a bounded number of sessions), or when $work/stop appears, or on
# SIGTERM, which also ends the client it is waiting for. Every client runs
# under timeout, which puts it in a process group of its own and passes a
# SIGTERM on to the whole group. A failed check appends a line to
# $work/failures and creates $work/stop.
t0=$(date +%s)
deadline=$((t0 + secs))
max_sessions=$((secs * 500))

# spawn SECONDS IN OUT CMD…: runs CMD under timeout with stdin IN and stdout
# OUT, in the background so that a SIGTERM to the loop can end it, and waits.
spawn() {
	local limit=$1 in=$2 out=$3 rc=0
	shift 3
	timeout -k 5 "$limit" "$@" <"$in" >"$out" 2>>"$work/clients.err" &
	cur=$!
	[[ $stopping == 0 ]] || kill -TERM "$cur" 2>/dev/null || true
	wait "$cur" || rc=$?
	[[ $stopping == 0 ]] || wait "$cur" 2>/dev/null || true
	cur=
	return "$rc"
}
loop_setup() {
	cur=
	stopping=0
	trap 'stopping=1; [[ -z $cur ]] || kill -TERM "$cur" 2>/dev/null || true' TERM
}
running() { ((stopping == 0)) && [[ ! -e $work/stop ]] && (($(date +%s) < deadline)); }
fail() {
	((stopping == 0)) || exit 0 # ended on purpose: not a failure
	echo "$*" >>"$work/failures"
	touch "$work/stop"
	exit 1
}
# count KIND SESSIONS BYTES: what a loop has done so far, for the progress
# lines and the summary.
count() { echo "$2 $3" >"$work/n.$1.tmp" && mv "$work/n.$1.tmp" "$work/n.$1"; }

# ACK: short sessions of 1-8 random lines of 1-200 characters (letters,
# digits, spaces, dashes) through the ACK server, each reply exactly
# "ACK: <line>".
loop_ack() {
	loop_setup
	local n=0 bytes=0 k i len line rc d="$work/ack"
	count ack 0 0
	for ((s = 0; s < max_sessions; s++)); do
		running || break
		: >"$d.in"
		: >"$d.want"
		k=$((RANDOM % 8 + 1))
		for ((i = 0; i < k; i++)); do
			len=$((RANDOM % 200 + 1))
			line=$(head -c 160 /dev/urandom | base64 -w0 | tr '+/' ' -')
			line=${line:0:len}
			printf '%s\n' "$line" >>"$d.in"
			printf 'ACK: %s\n' "$line" >>"$d.want"
		done
		rc=0
		spawn 60 "$d.in" "$d.got" nc -N "$stack" 5000 || rc=$?
		((stopping == 0)) || break
		((rc == 0)) || fail "ack session $((n + 1)): nc exited with status $rc$( ((rc != 124)) || echo " (timed out after 60 s)")"
		cmp -s "$d.want" "$d.got" || fail "ack session $((n + 1)): the replies differ from \"ACK: <line>\" for each of the $k lines sent: $(diff "$d.want" "$d.got" | head -5 | tr '\n' '|')"
		n=$((n + 1))
		bytes=$((bytes + $(wc -c <"$d.in") + $(wc -c <"$d.got")))
		count ack "$n" "$bytes"
	done
}

# Uploads: 1-4 MiB of random bytes through echo (what comes back has the same
# SHA-256), then as much into discard (nc must finish cleanly), in turn.
loop_upload() {
	loop_setup
	local ne=0 be=0 nd=0 bd=0 size rc want got d="$work/up"
	count echo 0 0
	count discard 0 0
	for ((s = 0; s < max_sessions; s++)); do
		running || break
		size=$(((RANDOM % 4 + 1) << 20))
		head -c "$size" /dev/urandom >"$d.in"
		want=$(sha256sum <"$d.in")
		rc=0
		if ((s % 2 == 0)); then
			spawn 300 "$d.in" "$d.got" nc -N "$stack" 7 || rc=$?
			((stopping == 0)) || break
			((rc == 0)) || fail "echo transfer $((ne + 1)) of $size bytes: nc exited with status $rc$( ((rc != 124)) || echo " (timed out after 300 s)")"
			got=$(sha256sum <"$d.got")
			[[ $got == "$want" ]] || fail "echo transfer $((ne + 1)): sent $size bytes, got back $(wc -c <"$d.got") bytes with a different SHA-256"
			ne=$((ne + 1))
			be=$((be + 2 * size))
			count echo "$ne" "$be"
		else
			spawn 300 "$d.in" /dev/null nc -N "$stack" 9 || rc=$?
			((stopping == 0)) || break
			((rc == 0)) || fail "discard transfer $((nd + 1)) of $size bytes: nc exited with status $rc$( ((rc != 124)) || echo " (timed out after 300 s)")"
			nd=$((nd + 1))
			bd=$((bd + size))
			count discard "$nd" "$bd"
		fi
	done
}

# Downloads: 1-8 MiB from http's /bytes?n=N, then 1-4 MiB from chargen, in
# turn; each exactly N bytes, and the same N bytes as RFC 864's pattern.
loop_download() {
	loop_setup
	local nh=0 bh=0 nc_=0 bc=0 size rc got d="$work/down"
	count http 0 0
	count chargen 0 0
	for ((s = 0; s < max_sessions; s++)); do
		running || break
		rc=0
		if ((s % 2 == 0)); then
			size=$(((RANDOM % 8 + 1) << 20))
			spawn 300 /dev/null "$d.got" curl -sS --fail --max-time 290 "http://$stack/bytes?n=$size" || rc=$?
			((stopping == 0)) || break
			((rc == 0)) || fail "http download $((nh + 1)) of $size bytes: curl exited with status $rc$( ((rc != 124)) || echo " (timed out after 300 s)"): $(tail -1 "$work/clients.err")"
		else
			size=$(((RANDOM % 4 + 1) << 20))
			# nc dies of SIGPIPE once head has its bytes: only what head
			# got counts.
			# shellcheck disable=SC2016 # sh expands them
			spawn 120 /dev/null "$d.got" sh -c 'nc -d "$1" 19 | head -c "$2"' sh "$stack" "$size" || rc=$?
			((stopping == 0)) || break
		fi
		got=$(wc -c <"$d.got")
		if ((s % 2 == 0)); then
			((got == size)) || fail "http download $((nh + 1)): $got of $size bytes"
			cmp -s -n "$size" "$d.got" "$work/pattern" || fail "http download $((nh + 1)): $size bytes, but not RFC 864's pattern (first difference: $(cmp -n "$size" "$d.got" "$work/pattern" 2>&1 | head -1))"
			nh=$((nh + 1))
			bh=$((bh + size))
			count http "$nh" "$bh"
		else
			((got == size)) || fail "chargen download $((nc_ + 1)): $got of $size bytes (nc or timeout: status $rc)"
			cmp -s -n "$size" "$d.got" "$work/pattern" || fail "chargen download $((nc_ + 1)): $size bytes, but not RFC 864's pattern (first difference: $(cmp -n "$size" "$d.got" "$work/pattern" 2>&1 | head -1))"
			nc_=$((nc_ + 1))
			bc=$((bc + size))
			count chargen "$nc_" "$bc"
		fi
	done
}

# Ping: chunks of up to 25 echo requests 0.2 s apart (5 s; a minute more
# before timeout gives up on ping). Some are lost (1% each way): only a chunk
# with no reply at all fails.
loop_ping() {
	loop_setup
	local n=0 sent=0 recv=0 c tx rx rc left d="$work/ping"
	count ping 0 "0 0"
	for ((s = 0; s < max_sessions; s++)); do
		running || break
		left=$((deadline - $(date +%s)))
		c=$((left * 5 < 25 ? left * 5 : 25))
		((c >= 1)) || c=1
		rc=0
		spawn $((c / 5 + 60)) /dev/null "$d.out" ping -n -q -c "$c" -i 0.2 -W 2 "$stack" || rc=$?
		((stopping == 0)) || break
		tx='' rx=''
		read -r tx rx < <(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1 \2/p' "$d.out") || true
		[[ -n ${rx:-} ]] || fail "ping chunk $((n + 1)): no summary from ping (status $rc): $(tr '\n' '|' <"$d.out")"
		((rx > 0)) || fail "ping chunk $((n + 1)): none of $tx echo requests answered"
		n=$((n + 1))
		sent=$((sent + tx))
		recv=$((recv + rx))
		count ping "$n" "$sent $recv"
	done
}

loop_ack &
loops+=($!)
loop_upload &
loops+=($!)
loop_download &
loops+=($!)
loop_ping &
loops+=($!)

# The samples, and a progress line every ~10 s, until the deadline or the
# first failure.
json() { grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }
jsonsum() { { grep -o "\"$1\":[0-9]*" || true; } | cut -d: -f2 | awk '{s += $1} END {print s + 0}'; }
sessions() { cat "$work"/n.{ack,echo,discard,http,chargen} 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN { if (b < 0) print "-"; else if (b < 1048576) printf "%.1f KiB", b / 1024; else printf "%.1f MiB", b / 1048576 }'; }
echo "elapsed_s,goroutines,fds,rss_bytes,heap_bytes,endpoints,established,retransmits" >"$work/samples.csv"
died=
stats=
stats_at=
sample() {
	# One retry: on a loaded machine (a CI runner under -race) one answer
	# may take longer than the control socket's 15 s; two in a row is a
	# hang worth failing on.
	stats=$(timeout 30 "$USTACK_BIN" stats --json) ||
		{ sleep 1 && stats=$(timeout 30 "$USTACK_BIN" stats --json); } ||
		{ echo "soak.sh: ustack stats --json failed twice" >&2; return 1; }
	local e=$(($(date +%s) - t0))
	stats_at=$e
	echo "$e,$(json goroutines <<<"$stats"),$(json fds <<<"$stats"),$(json rss_bytes <<<"$stats"),$(json heap_bytes <<<"$stats"),$(json endpoints <<<"$stats"),$(json established <<<"$stats"),$(json retransmits <<<"$stats")" >>"$work/samples.csv"
}
echo "soak: ${secs}s of ack, echo, discard, http, chargen and ping traffic to $stack at 1% loss each way (seed 1); sampling every ${interval}s"
last_progress=$t0
for ((i = 1; i <= secs * 1000 / 500 + 1; i++)); do
	now=$(date +%s)
	((now < deadline)) || break
	sleep "$interval"
	if ! kill -0 "$pid" 2>/dev/null; then
		died=$(($(date +%s) - t0))
		break
	fi
	[[ -s $work/failures ]] && break
	sample || {
		kill -0 "$pid" 2>/dev/null || died=$(($(date +%s) - t0))
		[[ -n $died ]] && break
		echo "stats --json failed" >>"$work/failures"
		break
	}
	now=$(date +%s)
	if ((now - last_progress >= 10 || now >= deadline)); then
		last_progress=$now
		IFS=, read -r _ g f r _ <<<"$(tail -1 "$work/samples.csv")"
		printf '%5ds  sessions OK %6d  RSS %9s  goroutines %4d  fds %3d\n' $((now - t0)) "$(sessions)" "$(mib "$r")" "$g" "$f"
	fi
done

# Stop the loops (at once after a failure; otherwise they end by themselves
# at the deadline, once their last client is done) and wait for them.
if [[ -s $work/failures || -n $died ]]; then
	touch "$work/stop"
	for p in "${loops[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
fi
for p in "${loops[@]}"; do wait "$p" || true; done
loops=()
[[ -n $died ]] || kill -0 "$pid" 2>/dev/null || died=$(($(date +%s) - t0))

failures=()
if [[ -n $died ]]; then
	rc=0
	wait "$pid" || rc=$?
	pid=
	failures+=("ustack exited early, with status $rc, found ${died}s into the run (its output is above; failed sessions after it may be its doing)")
	# A panic's first lines say what and where; the rest is every goroutine.
	{
		echo "soak.sh: ustack's output:"
		if grep -qE '^(panic|fatal error):' "$work/up.out"; then
			sed -n '/^\(panic\|fatal error\):/,$p' "$work/up.out" | head -60
		else
			tail -30 "$work/up.out"
		fi
	} >&2
else
	sample || failures+=("ustack stats --json failed at the end")
fi
if [[ -s $work/failures ]]; then
	while IFS= read -r line; do failures+=("$line"); done <"$work/failures"
fi
elapsed=$(($(date +%s) - t0))

# Growth: the medians of the second quarter of the run (after the warm-up)
# against those of the last quarter. The traffic is steady, so goroutines and
# fds must be flat. Goroutines: each client connection open at a sample holds
# at most 3 in ustack (the app's handler, chargen's reader and writer, net/http's
# connection and its background read), and the script has at most 3 open at a
# time, plus the stats connection itself: the count moves by at most 12 with
# what happens to be open, while a leak of one per session grows by thousands.
# fds: netstack's connections are no kernel sockets, so ustack's fds are the
# TUN device, the control socket and the stats connection: a margin of 2.
# RSS: max(20%, 20 MiB), for the Go heap's and the allocator's slack.
read -r q1r q1g q1f q2r q2g q2f q2e q4r q4g q4f q4e < <(awk -F, -v d="$secs" '
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		return n ? a[int((n + 1) / 2)] : -1
	}
	NR > 1 {
		q = $1 < d / 4 ? 1 : $1 < d / 2 ? 2 : $1 < 3 * d / 4 ? 3 : 4
		n[q]++; r[q, n[q]] = $4; g[q, n[q]] = $2; f[q, n[q]] = $3; e[q, n[q]] = $6
	}
	END {
		for (q = 1; q <= 4; q += (q == 2 ? 2 : 1)) {
			delete a
			for (i = 1; i <= n[q]; i++) a[i] = r[q, i]; out = out " " median(a, n[q])
			for (i = 1; i <= n[q]; i++) a[i] = g[q, i]; out = out " " median(a, n[q])
			for (i = 1; i <= n[q]; i++) a[i] = f[q, i]; out = out " " median(a, n[q])
			if (q > 1) { for (i = 1; i <= n[q]; i++) a[i] = e[q, i]; out = out " " median(a, n[q]) }
		}
		print out
	}' "$work/samples.csv")
if [[ -z $died && ! -s $work/failures ]]; then
	if ((q2r < 0 || q4r < 0)); then
		failures+=("too few samples to compare the second quarter of the run with the last")
	else
		rss_margin=$((q2r / 5 > 20 << 20 ? q2r / 5 : 20 << 20))
		((q4r - q2r <= rss_margin)) || failures+=("RSS grew from a median of $(mib "$q2r") (second quarter) to $(mib "$q4r") (last quarter): more than $(mib "$rss_margin")")
		((q4g - q2g <= 12)) || failures+=("goroutines grew from a median of $q2g (second quarter) to $q4g (last quarter): more than 12")
		((q4f - q2f <= 2)) || failures+=("fds grew from a median of $q2f (second quarter) to $q4f (last quarter): more than 2")
	fi
fi

# ustack must stop cleanly, too.
if [[ -n $pid ]]; then
	kill -INT "$pid"
	rc=0
	wait "$pid" || rc=$?
	pid=
	((rc == 0)) || failures+=("ustack up exited with status $rc when stopped: $(tail -5 "$work/up.out" | tr '\n' '|')")
fi

# The summary.
read -r n_ack b_ack <"$work/n.ack" || true
read -r n_echo b_echo <"$work/n.echo" || true
read -r n_disc b_disc <"$work/n.discard" || true
read -r n_http b_http <"$work/n.http" || true
read -r n_chg b_chg <"$work/n.chargen" || true
read -r n_ping p_tx p_rx <"$work/n.ping" || true
total=$((${b_ack:-0} + ${b_echo:-0} + ${b_disc:-0} + ${b_http:-0} + ${b_chg:-0}))
echo
echo "soak summary"
printf '  duration     %ds of %ds (%s), %d samples\n' "$elapsed" "$secs" "$duration" $(($(wc -l <"$work/samples.csv") - 1))
printf '  ack          %7d sessions  %12s\n' "${n_ack:-0}" "$(mib "${b_ack:-0}")"
printf '  echo         %7d sessions  %12s  (sent and received)\n' "${n_echo:-0}" "$(mib "${b_echo:-0}")"
printf '  discard      %7d sessions  %12s\n' "${n_disc:-0}" "$(mib "${b_disc:-0}")"
printf '  http         %7d sessions  %12s\n' "${n_http:-0}" "$(mib "${b_http:-0}")"
printf '  chargen      %7d sessions  %12s\n' "${n_chg:-0}" "$(mib "${b_chg:-0}")"
printf '  ping         %7d chunks    %d of %d echo requests answered\n' "${n_ping:-0}" "${p_rx:-0}" "${p_tx:-0}"
printf '  bytes moved  %s by the TCP clients, checked\n' "$(mib "$total")"
if [[ -n $stats ]]; then
	[[ -z $died ]] || echo "  (the counters below are from the last sample, ${stats_at}s into the run)"
	printf '  tcp          %s retransmits (%s fast), %s timeouts; %s segments in, %s out\n' "$(json retransmits <<<"$stats")" "$(json fast_retransmits <<<"$stats")" \
		"$(json timeouts <<<"$stats")" "$(json segments_in <<<"$stats")" "$(json segments_out <<<"$stats")"
	printf '  lost         %s packets by fault injection (%s in, %s out)\n' "$(jsonsum lost <<<"$stats")" \
		"$(grep -o '"in":{"packets":[0-9]*,"lost":[0-9]*' <<<"$stats" | grep -o '[0-9]*$')" "$(grep -o '"out":{"packets":[0-9]*,"lost":[0-9]*' <<<"$stats" | grep -o '[0-9]*$')"
fi
printf '  %-12s %14s %14s %14s\n' "medians" "first quarter" "second quarter" "last quarter"
num() { if (($1 < 0)); then echo -; else echo "$1"; fi; }
printf '  %-12s %14s %14s %14s\n' "RSS" "$(mib "$q1r")" "$(mib "$q2r")" "$(mib "$q4r")"
printf '  %-12s %14s %14s %14s\n' "goroutines" "$(num "$q1g")" "$(num "$q2g")" "$(num "$q4g")" "fds" "$(num "$q1f")" "$(num "$q2f")" "$(num "$q4f")" \
	"endpoints" "" "$(num "$q2e")" "$(num "$q4e")"
if ((${#failures[@]} > 0)); then
	for f in "${failures[@]}"; do echo "soak.sh: FAIL: $f" >&2; done
	echo "FAIL (${#failures[@]} problem$( ((${#failures[@]} == 1)) || echo s); see above)"
	exit 1
fi
echo "PASS"
