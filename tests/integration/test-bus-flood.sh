#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Fault test: a connection flood on the daemon's 0666 bus socket. The daemon runs with a small open-file
# limit; an unprivileged user holds as many idle connections as it can, then root does; root's evsctl must
# answer during the first flood and after each one ends (the daemon keeps accepting once descriptors free up).
#   test-bus-flood.sh EVS_CRYPTD EVSCTL
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2")
PY=/usr/bin/python3
for tool in setpriv timeout "$PY"; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done

T=$(mktemp -d /tmp/evs-test.XXXXXX)
chmod 0755 "$T"
PID= FLOOD=
cleanup() {
        [ -n "$FLOOD" ] && kill "$FLOOD" 2>/dev/null
        [ -n "$PID" ] && kill "$PID" 2>/dev/null
        wait 2>/dev/null
        rm -rf "$T"
}
trap cleanup EXIT

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/run/bus
CONF
# 64 descriptors: a few dozen connections exhaust them.
(ulimit -n 64 && exec "$DAEMON" --config "$T/evs-cryptd.conf" 2>"$T/daemon.log") &
PID=$!
for _ in $(seq 100); do [ -S "$T/run/bus" ] && break; sleep 0.05; done
export EVS_BUS=$T/run/bus

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"

# flood [SETPRIV...]: opens 200 connections and holds them, idle, until killed; "ready" on $T/flood.out once
# they are all connected (a connect completes when the kernel queues it, whether or not the daemon accepts).
flood() {
        rm -f "$T/flood.out"
        "$@" "$PY" -c '
import socket, sys, time
held = []
for _ in range(200):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    held.append(s)
print("ready", flush=True)
time.sleep(120)
' "$EVS_BUS" >"$T/flood.out" 2>&1 &
        FLOOD=$!
        for _ in $(seq 100); do grep -q ready "$T/flood.out" 2>/dev/null && break; sleep 0.05; done
        sleep 0.5 # let the daemon work through its backlog
}
stop_flood() { kill "$FLOOD" 2>/dev/null; wait "$FLOOD" 2>/dev/null; FLOOD=; }

expect 0 "status before any flood" -- timeout 5 "$EVSCTL" status

# --- an unprivileged user: at most a few connections, each short-lived; root is never locked out ---
flood setpriv --reuid=65534 --regid=65534 --clear-groups
check "the unprivileged flood holds its 200 connections" 'grep -q ready "$T/flood.out"'
expect 0 "root's status answers during the unprivileged flood" -- timeout 5 "$EVSCTL" status
expect 0 "root's key list answers during the unprivileged flood" -- timeout 5 "$EVSCTL" key list
expect 7 "a non-root caller is still refused as such during the flood" -- \
        timeout 5 setpriv --reuid=65534 --regid=65534 --clear-groups "$EVSCTL" key list
check "its reason says access denied" '[[ "$err" == *"ccess denied"* ]]'
check "the daemon's descriptors are not exhausted" '[ "$(ls /proc/$PID/fd | wc -l)" -lt 32 ]'
sleep 3.5 # past the unprivileged connections' lifetime
check "idle unprivileged connections are closed after their lifetime" '[ "$(ls /proc/$PID/fd | wc -l)" -lt 16 ]'
stop_flood
expect 0 "root's status answers after the unprivileged flood" -- timeout 5 "$EVSCTL" status

# --- root itself exhausts the daemon's descriptors: once they free up, the daemon accepts again ---
flood
check "root's flood exhausted the descriptors" 'grep -q "Cannot accept bus connections" "$T/daemon.log"'
stop_flood
sleep 0.5
expect 0 "status answers once the descriptors are free again" -- timeout 5 "$EVSCTL" status
expect 0 "and again" -- timeout 5 "$EVSCTL" --json key show evs/default
check "the pause was logged once, and the recovery" \
        '[ "$(grep -c "Cannot accept bus connections" "$T/daemon.log")" = 1 ] && grep -q "Accepting bus connections again" "$T/daemon.log"'

kill "$PID"; wait "$PID"; rc=$?; PID=
check "daemon exits cleanly on SIGTERM" '[ "$rc" = 0 ]'
check "no sanitizer report from the daemon" '! grep -q "Sanitizer\|runtime error" "$T/daemon.log"'
[ "$failed" = 0 ] || { echo "--- daemon log"; cat "$T/daemon.log"; }
tap_done
