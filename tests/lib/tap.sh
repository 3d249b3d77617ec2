# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=sh
# The shell test suites' reporting, one implementation for the host and the VM guests (POSIX sh, so
# busybox ash runs it too): "ok N - ..." / "not ok N - ..." lines and the closing "N passed, N failed".
# Needs $T, a scratch directory of the test's own.

passed=0 failed=0

ok() { passed=$((passed + 1)); echo "ok $((passed + failed)) - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok $((passed + failed)) - $1"; }

# expect CODE DESCRIPTION [--] COMMAND...: runs COMMAND and checks its exit code; its standard output is
# left in $out, its standard error in $err (and in the failure line).
expect() {
        tap_want=$1 tap_what=$2
        shift 2
        [ "${1:-}" = -- ] && shift
        out=$("$@" 2>"$T/.tap-err")
        tap_rc=$?
        err=$(cat "$T/.tap-err")
        if [ "$tap_rc" = "$tap_want" ]; then ok "$tap_what"; else not_ok "$tap_what (exit $tap_rc, wanted $tap_want): $err"; fi
}

# The same, with $out compacted (newlines and spaces removed) for matching JSON with grep.
expect_compact() {
        expect "$@"
        out=$(printf '%s' "$out" | tr -d '\n ')
}

# check DESCRIPTION SHELL-CONDITION
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }

# The closing line; the status says whether everything passed.
tap_done() {
        echo "$passed passed, $failed failed"
        [ "$failed" = 0 ]
}
