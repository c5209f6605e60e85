#!/usr/bin/env bash
# Runs the whole ustack test suite, exactly as CI does (.ci/run calls this).
#
# The end-to-end tests drive ustack with the clients a person would use (nc,
# ping, tcpdump, curl, setpriv, unshare, ip, and a headless Chromium for the
# web view): this installs the ones that are missing, with apt-get. The tests that need a TUN device need root
# (CAP_NET_ADMIN and /dev/net/tun), and each test binary makes its own network
# namespace for them, so nothing touches this machine's interfaces or routes:
# the tests are built as you and, when you are not root, run with sudo.
#
# Extra arguments go to `go test`, e.g. scripts/test.sh -run TestUp -v
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)

missing=()
for pair in ip:iproute2 nc:netcat-openbsd ping:iputils-ping tcpdump:tcpdump setpriv:util-linux unshare:util-linux nsenter:util-linux sysctl:procps curl:curl chromium:chromium; do
	PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
	echo "scripts/test.sh: the TUN tests need root: run this as root, or install sudo" >&2
	exit 2
fi
if [ ${#missing[@]} -gt 0 ]; then
	echo "scripts/test.sh: installing ${missing[*]}" >&2
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

exec_flag=()
# -E keeps USTACK_REQUIRE_NETNS (and GOFLAGS, GOCACHE…) for the test binaries.
[ "$(id -u)" = 0 ] || exec_flag=(-exec "sudo -E")
exec go test -race "${exec_flag[@]}" "$@" ./...
