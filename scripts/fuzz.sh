#!/usr/bin/env bash
# fuzz.sh — run every fuzz target of the repository for a while, one after
# another, and say which of them found something.
#
#   scripts/fuzz.sh [DURATION]     (default 20s; any -fuzztime: 60s, 5m, 100000x)
#
# The targets are found with grep — every `func FuzzXxx(f *testing.F)` in a
# _test.go file — so a new one is picked up without editing this script.
# `go test -fuzz` fuzzes one target of one package at a time: each runs for
# DURATION, plus the time to build its package and replay its corpus.
#
# A target that fails writes the input that made it fail to
# <package>/testdata/fuzz/<FuzzName>/<hash>. Committed, that file is a
# regression test: a plain `go test` replays it on every run.
#
# It needs no root and no network: every target runs in memory. (The test
# binaries of tunif/ and cmd/ustack/cli/ re-execute themselves in a private
# network namespace when they can, as in every test run: see tunif/netnstest.)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-20s}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# "pkg/dir FuzzName" per target, sorted.
targets=$(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . |
	sed -E 's|^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*).*|\1 \2|' | sort)
if [[ -z $targets ]]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

echo "fuzzing $(wc -l <<<"$targets") targets for $duration each"
failed=0
start=$SECONDS
while read -r dir name; do
	log=$logs/$name.log
	t0=$SECONDS
	result=ok
	input=
	note=
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$duration" "./$dir/" </dev/null >"$log" 2>&1; then
		input=$(sed -nE 's|.*Failing input written to (testdata/fuzz/[^ ]*).*|\1|p' "$log" | tail -1)
		if [[ -z $input ]] && grep -qx '    context deadline exceeded' "$log" && ! grep -q '^panic: ' "$log" &&
			go test -run "^${name}\$" "./$dir/" </dev/null >>"$log" 2>&1; then
			# Go's fuzzing coordinator can report its own -fuzztime
			# deadline as a failure (go.dev/issue/75804, fixed in Go
			# 1.27). No input failed and the corpus replays clean.
			note="(the fuzztime deadline race of go.dev/issue/75804; nothing failed)"
		else
			result=FAIL
			failed=$((failed + 1))
		fi
	fi
	execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
	printf '%-4s %-22s ./%-18s %9s execs %4ds %s\n' "$result" "$name" "$dir/" "${execs:-?}" $((SECONDS - t0)) "$note"
	if [[ $result == FAIL ]]; then
		# What failed: the test's own report, without the progress lines.
		grep -vE '^fuzz: (elapsed|minimizing)' "$log" | sed 's/^/    | /' | head -40 >&2
		seed=$(sed -nE 's|^failure while testing seed corpus entry: ([^ ]*).*|\1|p' "$log" | tail -1)
		if [[ -n $input ]]; then
			echo "    the failing input is in $dir/$input: commit it and go test replays it as a regression test" >&2
			echo "    (go test -run '$name/${input##*/}' ./$dir/ runs it alone)" >&2
		elif [[ $seed == */seed#* ]]; then
			echo "    its f.Add ${seed#*/} fails, before any fuzzing" >&2
		elif [[ -n $seed ]]; then
			echo "    the corpus file $dir/testdata/fuzz/$seed fails, before any fuzzing: a regression is back" >&2
		fi
	fi
done <<<"$targets"

echo "$(wc -l <<<"$targets") targets, $failed failed, $((SECONDS - start))s in all"
[[ $failed == 0 ]]
