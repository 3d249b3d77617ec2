#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The built evs-cryptd.service and evs-cryptd.socket pass `systemd-analyze verify`, and the
# service's exposure (`systemd-analyze security --offline=true`) is 2.5 or lower.
# Usage: test-units.sh SERVICE SOCKET EVS_CRYPTD     (skips with 77 without systemd-analyze)
set -u
service=$1
socket=$2
daemon=$(realpath "$3")
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze is not installed"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# verify checks ExecStart= exists: point it at the built daemon.
sed "s|^ExecStart=.*|ExecStart=$daemon|" "$service" >"$tmp/evs-cryptd.service"
cp "$socket" "$tmp/evs-cryptd.socket"
systemd-analyze verify --man=no "$tmp/evs-cryptd.service" "$tmp/evs-cryptd.socket" || fail "systemd-analyze verify"

grep -qx 'Type=notify' "$service" || fail "not Type=notify"
grep -qx 'LimitNOFILE=16384' "$service" || fail "no LimitNOFILE= (a flood of root connections would hit the default 1024)"
grep -qx 'ListenStream=/run/evs-cryptd/bus' "$socket" || fail "socket path"
systemd-analyze security --offline=true --no-pager "$service" >"$tmp/security.out" 2>&1
grep 'Overall exposure level' "$tmp/security.out" || { cat "$tmp/security.out"; fail "no exposure level"; }
# --threshold= is the exposure times ten.
systemd-analyze security --offline=true --threshold=25 "$service" >/dev/null 2>&1 || fail "exposure above 2.5"
echo "ok"
