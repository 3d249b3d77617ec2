#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Read-only verbs never write: with one LUKS2 header copy damaged, `volume show` and `volume list` (which warn,
# naming the damaged copy) and `volume attach` (refused) leave the disk byte for byte as it was (libcryptsetup
# would restore the copy on load); `volume repair` rewrites it on purpose, after which the volume opens again.
#   test-header-damage.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3")
PY=/usr/bin/python3
for tool in cryptsetup timeout "$PY"; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done

T=$(mktemp -d /tmp/evs-test.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/run/bus
CONF
"$DAEMON" --config "$T/evs-cryptd.conf" 2>"$T/daemon.log" &
PID=$!
for _ in $(seq 100); do [ -S "$T/run/bus" ] && break; sleep 0.05; done
export EVS_BUS=$T/run/bus
E() { timeout 20 "$EVSCTL" "$@"; }

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
jq_() { "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
sum() { sha256sum "$1" | cut -d" " -f1; }
# damage FILE OFFSET: overwrites 8 bytes of a header's JSON area (its checksum no longer matches).
damage() { printf 'XXXXXXXX' | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

truncate -s 32M "$T/vol1.img"
expect 0 "volume create" -- E volume create "$T/vol1.img" --id vol1
cp "$T/vol1.img" "$T/pristine.img"
HDR=$(( $(od -An -tu1 -j8 -N8 "$T/vol1.img" | tr -s ' ' | "$PY" -c 'import sys; print(int.from_bytes(bytes(map(int, sys.stdin.read().split())), "big"))') ))
check "the primary header's size is read (secondary copy at $HDR)" '[ "$HDR" -ge 16384 ]'
expect 0 "repair of an intact volume" -- E --json volume repair vol1
check "nothing to repair, nothing written" '[ "$(jq_ "d[\"repaired\"]" <<<"$out")" = False ] && cmp -s "$T/vol1.img" "$T/pristine.img"'

for copy in primary secondary; do
        cp "$T/pristine.img" "$T/vol1.img"
        if [ "$copy" = primary ]; then damage "$T/vol1.img" 4200; else damage "$T/vol1.img" $((HDR + 4200)); fi
        before=$(sum "$T/vol1.img")
        expect 0 "$copy damaged: volume show by device reads the intact copy" -- E --json volume show "$T/vol1.img"
        check "$copy: its warning says which header copy is damaged, and how to repair" \
                '[[ "$(jq_ "d[\"warning\"]" <<<"$out")" == "the $copy LUKS2 header is damaged"*"evsctl volume repair"* ]]'
        expect 0 "$copy: volume show by id the same" -- E --json volume show vol1
        check "$copy: the same warning" '[[ "$(jq_ "d[\"warning\"]" <<<"$out")" == *"header is damaged"* ]]'
        expect 1 "$copy: volume attach is refused" -- E volume attach vol1
        check "$copy: attach says the header is damaged, and how to repair" \
                '[[ "$err" == *"the $copy LUKS2 header is damaged"* ]] && [[ "$err" == *"evsctl volume repair"* ]]'
        expect 0 "$copy: volume list answers" -- E --json volume list
        check "$copy: and warns" '[[ "$(jq_ "[v[\"warning\"] for v in d if v[\"id\"] == \"vol1\"][0]" <<<"$out")" == *"header is damaged"* ]]'
        check "$copy: the daemon logged the damage" 'grep -q "$T/vol1.img: the $copy LUKS2 header is damaged" "$T/daemon.log"'

        check "$copy: the disk is byte for byte unchanged" '[ "$(sum "$T/vol1.img")" = "$before" ]'
        expect 0 "$copy: volume repair" -- E --json volume repair vol1
        check "$copy: repaired, the volume shown detached, without a warning" \
                '[ "$(jq_ "d[\"repaired\"],d[\"id\"],d[\"state\"],d[\"warning\"]" <<<"$out")" = "(True, '"'"'vol1'"'"', '"'"'detached'"'"', None)" ]'
        check "$copy: the repair wrote" '[ "$(sum "$T/vol1.img")" != "$before" ]'
        expect 0 "$copy: volume show works again" -- E --json volume show vol1
        check "$copy: the keyslot opens with the unwrapped data key" \
                '"$UNWRAP" "$T/evs-cryptd.conf" "$T/vol1.img" | cryptsetup open --test-passphrase --key-file=- "$T/vol1.img"'
        check "$copy: the data area is untouched" \
                '[ "$(tail -c +16777217 "$T/vol1.img" | sha256sum)" = "$(tail -c +16777217 "$T/pristine.img" | sha256sum)" ]'
        before=$(sum "$T/vol1.img")
        expect 0 "$copy: a second repair" -- E --json volume repair "$T/vol1.img"
        check "$copy: nothing left to repair, nothing written" \
                '[ "$(jq_ "d[\"repaired\"]" <<<"$out")" = False ] && [ "$(sum "$T/vol1.img")" = "$before" ]'
done
check "the repair is logged" 'grep -q "Repaired the LUKS2 header of $T/vol1.img" "$T/daemon.log"'

# Both copies gone: not LUKS2 any more; nothing to repair from, nothing written.
cp "$T/pristine.img" "$T/vol1.img"
damage "$T/vol1.img" 4200
damage "$T/vol1.img" $((HDR + 4200))
before=$(sum "$T/vol1.img")
expect 1 "both copies damaged: volume show says it is not LUKS2" -- E volume show "$T/vol1.img"
expect 1 "both copies damaged: repair is refused" -- E volume repair "$T/vol1.img"
check "the reason says neither copy is intact" '[[ "$err" == *"neither LUKS2 header copy is intact"* ]]'
check "nothing written" '[ "$(sum "$T/vol1.img")" = "$before" ]'
expect 2 "repair without an argument is a usage error" -- E volume repair

kill "$PID"; wait "$PID"; rc=$?; PID=
check "daemon exits cleanly on SIGTERM" '[ "$rc" = 0 ]'
check "no sanitizer report from the daemon" '! grep -q "Sanitizer\|runtime error" "$T/daemon.log"'
[ "$failed" = 0 ] || { echo "--- daemon log"; cat "$T/daemon.log"; }
tap_done
