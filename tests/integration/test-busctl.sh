#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Stock D-Bus tools against the daemon's peer-to-peer socket: busctl and gdbus connect as bus clients
# (org.freedesktop.DBus.Hello first, then GetNameOwner/AddMatch...), which src/daemon/bus-hello.c
# answers. Root may introspect and call; a non-root caller gets AccessDenied, never a hang.
# Usage: test-busctl.sh EVS-CRYPTD EVSCTL     (skips with 77 without busctl; gdbus checks need gdbus)
set -u
DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2")
command -v busctl >/dev/null || { echo "SKIP: busctl is not installed (package systemd)"; exit 77; }
T=$(mktemp -d)
chmod 0755 "$T" # the non-root caller must reach the socket
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
printf '[Daemon]\nStateDirectory=%s/state\nBusPath=%s/bus\n' "$T" "$T" >"$T/conf"
"$DAEMON" --config "$T/conf" 2>"$T/daemon.log" &
PID=$!
for _ in $(seq 100); do [ -S "$T/bus" ] && break; sleep 0.05; done
. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
A=unix:path=$T/bus
OBJ=/org/evs/Cryptd1
IF=org.evs.Cryptd1.Manager
bc() { timeout 20 busctl --address="$A" "$@"; }

expect 0 "busctl introspect org.evs.Cryptd1 $OBJ" -- bc introspect org.evs.Cryptd1 "$OBJ"
check "it lists the Manager's methods with their signatures" 'grep -q "^\.GetStatus  *method  *-  *(sssasuu)" <<<"$out" && grep -q "^\.CreateKey  *method  *sss  *(ssssstt)" <<<"$out"'
expect 0 "busctl call GetStatus" -- bc call org.evs.Cryptd1 "$OBJ" "$IF" GetStatus
check "the daemon's version and state directory: $out" '[[ $out == "(sssasuu) \"$("$EVSCTL" --version | cut -d" " -f2)\" \"$T/state\" \"local\" 1 \"local\""* ]]'
expect 0 "busctl call CreateKey" -- bc call org.evs.Cryptd1 "$OBJ" "$IF" CreateKey sss made-by-busctl "from busctl" ""
check "a key object came back" '[[ $out == "(ssssstt) \"local\" "*"\"made-by-busctl\" \"from busctl\" \"enabled\""* ]]'
export EVS_BUS=$T/bus
expect 0 "evsctl sees the key" -- "$EVSCTL" --json key show made-by-busctl
check "enabled" 'grep -q "\"state\": *\"enabled\"" <<<"$out"'
expect 0 "busctl --json=short call ListKeys" -- bc --json=short call org.evs.Cryptd1 "$OBJ" "$IF" ListKeys
check "it holds the key" 'grep -q "made-by-busctl" <<<"$out"'
expect 0 "busctl tree" -- bc tree org.evs.Cryptd1
check "shows the object" 'grep -q "/org/evs/Cryptd1" <<<"$out"'
expect 1 "an unknown method is an error, not a hang" -- bc call org.evs.Cryptd1 "$OBJ" "$IF" NoSuchMethod
check "UnknownMethod: $err" '[[ $err == *"Unknown method"* || $err == *"UnknownMethod"* || $err == *"not known"* ]]'
if command -v setpriv >/dev/null; then
        expect 1 "a non-root busctl caller is refused" -- setpriv --reuid=65534 --regid=65534 --clear-groups \
                timeout 20 busctl --address="$A" call org.evs.Cryptd1 "$OBJ" "$IF" ListKeys
        check "with the daemon's reason: $err" '[[ $err == *"only root may use evs-cryptd"* ]]'
fi

if command -v gdbus >/dev/null; then
        expect 0 "gdbus introspect" -- timeout 20 gdbus introspect --address "$A" --dest org.evs.Cryptd1 --object-path "$OBJ"
        check "the Manager interface" 'grep -q "interface org.evs.Cryptd1.Manager" <<<"$out" && grep -q "GetStatus(out (sssasuu)" <<<"$out"'
        expect 0 "gdbus call GetKey" -- timeout 20 gdbus call --address "$A" --dest org.evs.Cryptd1 --object-path "$OBJ" \
                --method "$IF.GetKey" made-by-busctl
        check "the key: $out" '[[ $out == "(('"'"'local'"'"', "*"'"'"'made-by-busctl'"'"', '"'"'from busctl'"'"', '"'"'enabled'"'"'"* ]]'
        # GLib sends Hello in the same write as BEGIN; libsystemd 252 left such a message unread (bus-hello.c),
        # about one connection in ten hung.
        hung=0
        for _ in $(seq 40); do
                timeout 5 gdbus call --address "$A" --dest org.evs.Cryptd1 --object-path "$OBJ" --method "$IF.GetStatus" \
                        >/dev/null 2>&1 || hung=$((hung + 1))
        done
        check "40 gdbus calls in a row, none hangs ($hung did)" '[ "$hung" = 0 ]'
else
        echo "# gdbus is not installed (package libglib2.0-bin): its checks are left out"
fi
check "no warning in the daemon's log" '! grep -q "^<[0-4]>" "$T/daemon.log"'
tap_done
