#!/usr/bin/env bash
# ui-screenshot.sh — make the README's picture of the web view.
#
#   scripts/ui-screenshot.sh [OUT.png]     (default docs/webui.png)
#
# It runs the web view's end-to-end test (TestWebUI in cmd/ustack): in a
# network namespace of the test's own, `ustack up --ui` serves the page, a
# headless Chromium opens it, nc says hello to the ACK server and leaves, and
# the test checks the page, clicks the SYN and saves the screenshot to OUT.
# Needs root for the namespace and the TUN (it uses sudo when you are not),
# and Chromium (sudo apt-get install chromium). Nothing is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(realpath -m "${1:-docs/webui.png}")
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || {
	echo "ui-screenshot.sh: needs Chromium: sudo apt-get install chromium" >&2
	exit 2
}
exec_flag=()
[ "$(id -u)" = 0 ] || exec_flag=(-exec "sudo -E")
USTACK_UI_SCREENSHOT="$out" USTACK_REQUIRE_NETNS=1 go test "${exec_flag[@]}" -count=1 -run '^TestWebUI$' ./cmd/ustack/
echo "ui-screenshot.sh: wrote $out"
