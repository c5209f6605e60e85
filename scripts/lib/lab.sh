# shellcheck shell=bash
# lab.sh — the set-up every lab script shares. Source it, then call lab_enter:
#
#   . "$(dirname "$0")/lib/lab.sh"
#   lab_enter "nc curl" "netcat-openbsd curl" USTACK_SOME_SETTING ...
#
# lab_enter builds ustack (or takes $USTACK_BIN), runs the script again with
# sudo if it is not root (keeping USTACK_BIN and the variables named), checks
# the tools it needs (with unshare and ip) and says which package has a
# missing one, and runs the script again under `unshare -n`: from then on it
# is root in a fresh network namespace of its own, which nothing outside
# sees and which ends with the script. There it brings lo up, makes $work (a
# temporary directory, removed at exit) and points USTACK_RUN_DIR into it.
#
# At exit — normal, an error, Ctrl-C or SIGTERM — it stops the ustack whose
# PID is in $pid (SIGINT, then waits), runs the script's at_exit function if
# it has one, and removes $work.
#
# fail MESSAGE prints "SCRIPT: MESSAGE" and exits 1.

lab_name=$(basename "$0")
lab_args=("$@")
lab_cleanups=() # commands lab_cleanup runs, in order

fail() {
	echo "$lab_name: $*" >&2
	exit 1
}

lab_enter() {
	local tools="unshare ip $1" packages="util-linux iproute2 $2" keep=USTACK_BIN tool
	shift 2
	for v in "$@"; do keep+=",$v"; done
	if [[ -z ${USTACK_BIN:-} ]]; then
		cd "$(dirname "$0")/.." || exit
		USTACK_BIN=$(mktemp -d)/ustack
		go build -o "$USTACK_BIN" ./cmd/ustack
		export USTACK_BIN
	fi
	if [[ $(id -u) != 0 ]]; then
		exec sudo --preserve-env="$keep" "$0" "${lab_args[@]}"
	fi
	if [[ ${USTACK_LAB_NETNS:-} != 1 ]]; then
		for tool in $tools; do
			command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install $packages)"
		done
		USTACK_LAB_NETNS=1 exec unshare -n "$0" "${lab_args[@]}"
	fi
	# From here on: root, in a fresh network namespace.
	ip link set lo up
	work=$(mktemp -d)
	export USTACK_RUN_DIR=$work/run
	pid=
	trap lab_cleanup EXIT
	trap 'exit 130' INT # Ctrl-C: once the command running now returns, clean up
	trap 'exit 143' TERM
}

lab_cleanup() {
	if [[ -n ${pid:-} ]] && kill -INT "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; fi
	if declare -F at_exit >/dev/null; then at_exit || true; fi
	local c
	for c in "${lab_cleanups[@]}"; do eval "$c" || true; done
	rm -rf "$work"
}

# lab_host_netns starts a second namespace inside the lab's, "the host", held
# open by a sleeping process of the script's — no name under /run/netns,
# nothing to forget: it ends when that process does (at exit; and should the
# script die first, the kernel ends it: --pdeathsig). It sets $hostpid and
# $host_ns and defines host COMMAND..., which runs COMMAND there (and only
# there). Needs setpriv and nsenter.
lab_host_netns() {
	local lab_ns ns=
	setpriv --pdeathsig KILL unshare -n sleep 300 &
	hostpid=$!
	lab_cleanups+=("kill $hostpid 2>/dev/null && wait $hostpid 2>/dev/null")
	lab_ns=$(readlink /proc/$$/ns/net)
	for _ in $(seq 100); do
		ns=$(readlink "/proc/$hostpid/ns/net") || fail "the host namespace's process died"
		[[ $ns != "$lab_ns" ]] && break
		sleep 0.02
	done
	[[ $ns != "$lab_ns" ]] || fail "the host namespace did not appear"
	host_ns=$ns
}

host() {
	[[ $(readlink "/proc/$hostpid/ns/net" 2>/dev/null) == "$host_ns" ]] || fail "the host namespace is gone"
	nsenter --target "$hostpid" --net "$@"
}
