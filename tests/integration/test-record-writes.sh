#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test: a volume record's write does not hold up the daemon's other work (issue 9). The
# daemon runs with tests/helpers/fsync-gate.so preloaded, which holds the fsync() of volume va's record for
# as long as a gate file exists: while va's attach is stuck in that write, another volume's check and attach
# (which need the engine lock) and va's own listing answer, and once the write goes on, va's attach ends as
# it would have, its record written. Before volume_db_update() the record was written under the engine
# lock, and everything behind it waited for the disk.
#   test-record-writes.sh EVS_CRYPTD EVSCTL FSYNC_GATE_SO
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") GATE_SO=$(readlink -f "$3")
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup is not installed"; exit 77; }
T=$(mktemp -d /tmp/evs-record-writes.XXXXXX)
PID=
cleanup() {
        rm -f "$T/gate"
        [ -n "$PID" ] && kill "$PID" 2>/dev/null
        wait 2>/dev/null
        rm -rf "$T"
}
trap cleanup EXIT
. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"

printf '[Daemon]\nStateDirectory=%s/state\nBusPath=%s/bus\n' "$T" "$T" >"$T/evs-cryptd.conf"
export EVS_BUS=$T/bus
# The temporary file write_file_atomic() makes for STATE/volumes/va.json. Under the sanitizers (scripts/test.sh)
# the preloaded gate comes before libasan, which ASan accepts only when told to.
LD_PRELOAD=$GATE_SO EVS_FSYNC_GATE=$T/gate EVS_FSYNC_GATE_MATCH="/volumes/.#va.json." \
        ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        "$DAEMON" --config "$T/evs-cryptd.conf" 2>>"$T/daemon.log" &
PID=$!
for _ in $(seq 200); do "$EVSCTL" status >/dev/null 2>&1 && break; sleep 0.05; done

for v in va vb; do
        truncate -s 20M "$T/$v.img"
        expect 0 "volume create $v" -- "$EVSCTL" volume create "$T/$v.img" --id "$v"
done
expect 1 "attach of vb fails here (no device-mapper), as the attach of va below will" -- "$EVSCTL" volume attach vb
NODM=$err

touch "$T/gate"
"$EVSCTL" volume attach va >"$T/va.out" 2>"$T/va.err" &
VA=$!
for _ in $(seq 400); do [ -e "$T/gate.held" ] && break; sleep 0.05; done
check "va's attach is held in the fsync of its record" '[ -e "$T/gate.held" ] && kill -0 "$VA" 2>/dev/null'

# timeout: a daemon that still writes records under the engine lock would answer only after the gate opens.
expect 0 "volume list answers meanwhile" -- timeout 30 "$EVSCTL" volume list
expect 1 "volume check vb answers meanwhile (it takes the engine lock)" -- timeout 30 "$EVSCTL" volume check vb
check "  with the check's own answer" '[[ "$out$err" == *device-mapper* ]]'
expect 1 "volume attach vb answers meanwhile, its record written" -- timeout 30 "$EVSCTL" volume attach vb
check "  with the same refusal as before" '[ "$err" = "$NODM" ]'
check "va's attach is still held" 'kill -0 "$VA" 2>/dev/null && [ ! -s "$T/va.err" ]'

rm -f "$T/gate"
wait "$VA"
rc=$?
check "once the write goes on, va's attach ends as an attach here does (exit $rc)" '[ "$rc" = 1 ] && [ "$(cat "$T/va.err")" = "${NODM//vb/va}" ]'
check "va's record holds the refusal" 'grep -q "device-mapper" "$T/state/volumes/va.json"'
check "no temporary record file is left" '! ls -A "$T/state/volumes" | grep -q "^\.#"'

# Refusals of one volume at once: each rewrites the record, none is lost or left half-written.
pids=()
for _ in $(seq 8); do "$EVSCTL" volume attach va >/dev/null 2>&1 & pids+=($!); done
wait "${pids[@]}"
check "after 8 attaches of va at once its record is whole" '/usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(d[\"id\"] != \"va\" or \"device-mapper\" not in d[\"last_error\"])" "$T/state/volumes/va.json"'
check "the daemon is still running" 'kill -0 "$PID"'
kill "$PID"; wait "$PID"; rc=$?; PID=
check "it exits cleanly on SIGTERM" '[ "$rc" = 0 ]'
check "no sanitizer report from the daemon" '! grep -q "Sanitizer\|runtime error" "$T/daemon.log"'

tap_done
