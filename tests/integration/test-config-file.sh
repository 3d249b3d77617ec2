#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The shipped conf/evs-cryptd.conf parses with the daemon's own parser (evs-cryptd --check-config),
# its commented settings are the real defaults, and --check-config fails with FILE:LINE on errors.
# Usage: test-config-file.sh EVS_CRYPTD CONF
set -u
daemon=$1
conf=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. As shipped.
"$daemon" --check-config --config "$conf" >"$tmp/shipped.out" 2>"$tmp/err" || { cat "$tmp/err"; fail "shipped file rejected"; }
grep -q '^  \[Backend local\] Type=local (default)$' "$tmp/shipped.out" || fail "no default local backend"

# 2. Every commented Key=Value outside the example [Backend] sections uncommented: same settings.
awk '/^#\[Backend /{ex=1} /^\[/{ex=0} !ex && /^#[A-Za-z.]+=/ {sub(/^#/, "")} {print}' "$conf" >"$tmp/uncommented.conf"
n=$(diff "$conf" "$tmp/uncommented.conf" | grep -c '^>')
[ "$n" -eq 7 ] || fail "expected 7 documented settings, found $n"
"$daemon" --check-config --config "$tmp/uncommented.conf" >"$tmp/uncommented.out" 2>"$tmp/err" || { cat "$tmp/err"; fail "uncommented defaults rejected"; }
grep -q '^  StateDirectory=/var/lib/evs-cryptd$' "$tmp/uncommented.out" || fail "StateDirectory= not /var/lib/evs-cryptd"
# The compiled-in state directory depends on --localstatedir: compare everything else.
diff <(tail -n +2 "$tmp/shipped.out" | grep -v StateDirectory=) <(tail -n +2 "$tmp/uncommented.out" | grep -v StateDirectory=) ||
        fail "commented values differ from the built-in defaults"

# 3. Each example backend section, uncommented, is recognised (its Type= and keys are known; the
#    backend may then refuse values that point at files absent here, but never an unknown key).
for b in corp-kmip hsm vault; do
        awk -v b="$b" '/^#\[Backend /{ex=($0 == "#[Backend " b "]")} ex && /^#[A-Za-z[]/ {sub(/^#/, "")} {print}' "$conf" >"$tmp/$b.conf"
        grep -q "^\[Backend $b\]" "$tmp/$b.conf" || fail "no example section $b"
        "$daemon" --check-config --config "$tmp/$b.conf" >/dev/null 2>"$tmp/err"
        if grep -Eq 'unknown|has no Type|not supported|Unknown' "$tmp/err"; then cat "$tmp/err"; fail "example $b has unknown settings"; fi
done

# 4. Errors name the file and line, and the exit status is 1.
printf '[Daemon]\nAutoAttach=maybe\n' >"$tmp/bad.conf"
"$daemon" --check-config --config "$tmp/bad.conf" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] || fail "bad value accepted"
grep -q "$tmp/bad.conf:2: AutoAttach= is not a boolean" "$tmp/err" || { cat "$tmp/err"; fail "no FILE:LINE reason"; }
mkdir "$tmp/bad.conf.d"
printf '[Daemon]\nAutoAttach=no\n' >"$tmp/bad.conf"
printf '\n[KMS]\nDefaultBackend=nosuch\n' >"$tmp/bad.conf.d/10-x.conf"
"$daemon" --check-config --config "$tmp/bad.conf" >/dev/null 2>"$tmp/err" && fail "drop-in error accepted"
grep -q "$tmp/bad.conf.d/10-x.conf:3: DefaultBackend=nosuch" "$tmp/err" || { cat "$tmp/err"; fail "drop-in error not located"; }
"$daemon" --check-config --config "$tmp/missing.conf" >/dev/null 2>&1 && fail "missing file accepted"
echo "ok: $conf"
