#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The built evs-cryptd.service and evs-cryptd.socket pass `systemd-analyze verify`, and the
# service's exposure (`systemd-analyze security --offline=true`) is 2.5 or lower; the same for
# evs-cryptd-metrics.service and its timer, whose exposure is 1.5 or lower.
# Usage: test-units.sh SERVICE SOCKET EVS_CRYPTD METRICS_SERVICE METRICS_TIMER EVSCTL
#        (skips with 77 without systemd-analyze)
set -u
service=$1
socket=$2
daemon=$(realpath "$3")
metrics_service=$4 metrics_timer=$5 evsctl=$(realpath "$6")
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
# The metrics service: evsctl writes the Prometheus text into node_exporter's directory, only while the daemon runs.
sed "s|^ExecStart=[^ ]*evsctl |ExecStart=$evsctl |" "$metrics_service" >"$tmp/evs-cryptd-metrics.service"
cp "$metrics_timer" "$tmp/evs-cryptd-metrics.timer"
systemd-analyze verify --man=no "$tmp/evs-cryptd-metrics.service" "$tmp/evs-cryptd-metrics.timer" ||
        fail "systemd-analyze verify of the metrics units"
grep -q '^ExecStart=.*evsctl metrics --format prometheus --output /var/lib/prometheus/node-exporter/evs-cryptd.prom$' \
        "$metrics_service" || fail "metrics service: ExecStart="
grep -qx 'ExecCondition=/bin/systemctl --quiet is-active evs-cryptd.service' "$metrics_service" ||
        fail "metrics service: no ExecCondition= (a call would start the daemon through its socket)"
grep -qx 'OnCalendar=minutely' "$metrics_timer" || fail "metrics timer: OnCalendar="
systemd-analyze security --offline=true --threshold=15 "$metrics_service" >"$tmp/security-metrics.out" 2>&1 ||
        { grep 'Overall exposure level' "$tmp/security-metrics.out"; fail "metrics service: exposure above 1.5"; }
grep 'Overall exposure level' "$tmp/security-metrics.out"
echo "ok"
