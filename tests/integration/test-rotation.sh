#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test of CMK rotation (issue 12): key versions, automatic rotation settings, volumes and
# images wrapped before and after a rotation, rewrap --latest/--all, key states refusing every version.
# Volumes are image files: their keyslots are checked with cryptsetup --test-passphrase (no device-mapper).
#   test-rotation.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3")
for tool in cryptsetup; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done

T=$(mktemp -d /tmp/evs-rot.XXXXXX)
chmod 0755 "$T"
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/run/bus
CONF
start_daemon() {
        ${EVS_VALGRIND_WRAPPER:-} "$DAEMON" --config "$T/evs-cryptd.conf" 2>>"$T/daemon.log" &
        PID=$!
        for _ in $(seq 600); do [ -S "$T/run/bus" ] && break; sleep 0.05; done
}
stop_daemon() { kill "$PID"; wait "$PID"; PID=; rm -f "$T/run/bus"; }
start_daemon
export EVS_BUS=$T/run/bus

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
jq_() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
opens() { "$UNWRAP" "$T/evs-cryptd.conf" "$1" | cryptsetup open --test-passphrase --key-file=- "$1"; }
token_version() { # the evs_key_version of the volume's evs-kms token ("None" when absent)
        cryptsetup token export --token-id "${2:-0}" "$1" | jq_ 'd.get("evs_key_version")'
}
n_tokens() { cryptsetup luksDump "$1" | grep -c "evs-kms"; }

# --- a key, its versions and schedule ---
expect 0 "create key rot" -- "$EVSCTL" --json key create rot
KEY=$(jq_ 'd["id"]' <<<"$out")
expect 0 "key show --json" -- "$EVSCTL" --json key show rot
check "a new key is version 1, rotation off, no next date" \
        '[ "$(jq_ "d[\"version\"],d[\"rotation_days\"],d[\"next_rotation\"],d[\"rotated\"]" <<<"$out")" = "(1, None, None, None)" ]'
check "the fields of before are still there" '[ "$(jq_ "d[\"state\"],d[\"alias\"]" <<<"$out")" = "('"'"'enabled'"'"', '"'"'rot'"'"')" ]'
expect 0 "key show (text)" -- "$EVSCTL" key show rot
check "text shows version and rotation" 'grep -q "version: 1$" <<<"$out" && grep -q "rotation: off$" <<<"$out"'

expect 2 "rotation period of 29 days refused" -- "$EVSCTL" key set-rotation rot --days 29
check "reason names the range" '[[ "$err" == *"30..365"* ]]'
expect 2 "rotation period of 366 days refused" -- "$EVSCTL" key set-rotation rot --days 366
expect 2 "set-rotation needs --days or --off" -- "$EVSCTL" key set-rotation rot
expect 2 "not both --days and --off" -- "$EVSCTL" key set-rotation rot --days 90 --off
expect 0 "rotation every 90 days" -- "$EVSCTL" --json key set-rotation rot --days 90
check "period 90, a next rotation date, still version 1" \
        '[ "$(jq_ "d[\"rotation_days\"],d[\"next_rotation\"] is not None,d[\"version\"]" <<<"$out")" = "(90, True, 1)" ]'
expect 0 "rotation off" -- "$EVSCTL" --json key set-rotation rot --off
check "period off, no next date" '[ "$(jq_ "d[\"rotation_days\"],d[\"next_rotation\"]" <<<"$out")" = "(None, None)" ]'
expect 0 "rotation every 365 days" -- "$EVSCTL" key set-rotation rot --days 365
check "text shows the period" 'grep -q "rotation: every 365 days" <<<"$out"'

# --- volumes wrapped before and after a rotation ---
truncate -s 32M "$T/v1.img" "$T/v2.img"
expect 0 "volume v1 under version 1" -- "$EVSCTL" volume create "$T/v1.img" --id v1 --key rot
check "v1's token records version 1" '[ "$(token_version "$T/v1.img")" = 1 ]'
check "v1 opens its keyslot" 'opens "$T/v1.img"'
expect 0 "rotate rot" -- "$EVSCTL" --json key rotate rot
check "rot is now version 2 with a rotation date, same id" \
        '[ "$(jq_ "d[\"version\"],d[\"rotated\"] is not None,d[\"id\"]" <<<"$out")" = "(2, True, '"'"'$KEY'"'"')" ]'
check "the rotation is in the journal/log with the new version" 'grep -q "rotated, now at version 2" "$T/daemon.log"'
expect 0 "volume v2 under version 2" -- "$EVSCTL" volume create "$T/v2.img" --id v2 --key rot
check "v2's token records version 2" '[ "$(token_version "$T/v2.img")" = 2 ]'
check "v1 (version 1) still opens its keyslot" 'opens "$T/v1.img"'
check "v2 (version 2) opens its keyslot" 'opens "$T/v2.img"'

expect 0 "volume show v1 --json" -- "$EVSCTL" --json volume show v1
check "v1 is wrapped with an older version" \
        '[ "$(jq_ "d[\"key_version\"],d[\"key_latest_version\"],d[\"key_outdated\"]" <<<"$out")" = "(1, 2, True)" ]'
expect 0 "volume show v1 (text)" -- "$EVSCTL" volume show v1
check "text says so and how to fix it" '[[ "$out" == *"key_version: 1, older than the key'"'"'s newest 2 (evsctl volume rewrap v1 --latest)"* ]]'
expect 0 "volume show v2 --json" -- "$EVSCTL" --json volume show v2
check "v2 is current" '[ "$(jq_ "d[\"key_version\"],d[\"key_outdated\"]" <<<"$out")" = "(2, False)" ]'
expect 0 "volume list" -- "$EVSCTL" volume list
check "the list notes v1's older version" 'grep "^v1 " <<<"$out" | grep -q "wrapped with key version 1, newest 2: rewrap --latest"'
check "and not v2's" '! grep "^v2 " <<<"$out" | grep -q "rewrap --latest"'
expect 0 "volume list --json" -- "$EVSCTL" --json volume list
check "JSON list: outdated flags" '[ "$(jq_ "sorted((v[\"id\"], v[\"key_outdated\"]) for v in d)" <<<"$out")" = "[('"'"'v1'"'"', True), ('"'"'v2'"'"', False)]" ]'

# --- the default key rotates too ---
expect 0 "rotate evs/default" -- "$EVSCTL" --json key rotate evs/default
check "evs/default is version 2" '[ "$(jq_ "d[\"version\"]" <<<"$out")" = 2 ]'
expect 0 "evs/default takes a rotation period" -- "$EVSCTL" key set-rotation evs/default --days 30

# --- rewrap --latest: the token moves to the new version, the data key and keyslot stay ---
expect 2 "rewrap needs --key or --latest" -- "$EVSCTL" volume rewrap v1
expect 2 "not both --key and --latest" -- "$EVSCTL" volume rewrap v1 --key rot --latest
expect 2 "--all takes no volume" -- "$EVSCTL" volume rewrap v1 --all
before_key=$("$UNWRAP" "$T/evs-cryptd.conf" "$T/v1.img" | od -An -tx1 | tr -d ' \n')
before_digest=$(cryptsetup luksDump "$T/v1.img" | sed -n '/^Digests:/,$p' | grep -A3 "Digest:" | tr -d ' \n')
expect 0 "rewrap v1 --latest" -- "$EVSCTL" volume rewrap v1 --latest
check "it says version 2, was 1" '[[ "$out" == *"re-wrapped under version 2 of key rot (was version 1)"* ]]'
check "v1's token records version 2 now, one token" '[ "$(token_version "$T/v1.img" "$(cryptsetup luksDump "$T/v1.img" | sed -n "s/^ *\([0-9]*\): evs-kms/\1/p" | head -1)")" = 2 ] && [ "$(n_tokens "$T/v1.img")" = 1 ]'
check "same data key, same keyslot digest" '[ "$("$UNWRAP" "$T/evs-cryptd.conf" "$T/v1.img" | od -An -tx1 | tr -d " \n")" = "$before_key" ] && [ "$(cryptsetup luksDump "$T/v1.img" | sed -n "/^Digests:/,\$p" | grep -A3 "Digest:" | tr -d " \n")" = "$before_digest" ]'
check "v1 opens its keyslot" 'opens "$T/v1.img"'
expect 0 "volume show v1 --json" -- "$EVSCTL" --json volume show v1
check "v1 is current" '[ "$(jq_ "d[\"key_version\"],d[\"key_outdated\"]" <<<"$out")" = "(2, False)" ]'

# --- rewrap --all: every older one, the current ones left alone ---
truncate -s 32M "$T/v3.img"
expect 0 "rotate rot to version 3" -- "$EVSCTL" key rotate rot
expect 0 "volume v3 under version 3" -- "$EVSCTL" volume create "$T/v3.img" --id v3 --key rot
v3_token=$(cryptsetup token export --token-id 0 "$T/v3.img")
expect 0 "rewrap --all" -- "$EVSCTL" volume rewrap --all
check "v1 and v2 re-wrapped, v3 not" '[[ "$out" == *"Volume v1: key version 2, newest 3"* ]] && [[ "$out" == *"Volume v2: key version 2, newest 3"* ]] && [[ "$out" != *"Volume v3: key"* ]] && [[ "$out" == *"2 volume(s) re-wrapped"* ]]'
check "v3's token untouched" '[ "$(cryptsetup token export --token-id 0 "$T/v3.img")" = "$v3_token" ]'
for v in v1 v2 v3; do
        check "$v opens its keyslot at version 3" 'opens "$T/$v.img" && [ "$(n_tokens "$T/$v.img")" = 1 ]'
done
expect 0 "volume list --json" -- "$EVSCTL" --json volume list
check "no volume outdated" '[ "$(jq_ "[v[\"key_version\"] for v in d]" <<<"$out")" = "[3, 3, 3]" ]'
expect 0 "rewrap --all with nothing to do" -- "$EVSCTL" volume rewrap --all
check "it says none" '[[ "$out" == *"0 volume(s) re-wrapped"* ]]'

# --- a disabled or pending-deletion key refuses every version ---
truncate -s 32M "$T/old.img"
expect 0 "create key st" -- "$EVSCTL" key create st
expect 0 "volume old under st version 1" -- "$EVSCTL" volume create "$T/old.img" --id old --key st
expect 0 "rotate st" -- "$EVSCTL" key rotate st
truncate -s 32M "$T/new.img"
expect 0 "volume new under st version 2" -- "$EVSCTL" volume create "$T/new.img" --id new --key st
expect 0 "disable st" -- "$EVSCTL" key disable st
for v in old new; do
        check "$v does not unwrap with st disabled" '! "$UNWRAP" "$T/evs-cryptd.conf" "$T/$v.img" >/dev/null 2>&1'
done
expect 3 "rotating a disabled key is refused" -- "$EVSCTL" key rotate st
check "reason: disabled, enable it first" '[[ "$err" == *"disabled (enable it first)"* ]]'
expect 3 "set-rotation on a disabled key is refused" -- "$EVSCTL" key set-rotation st --days 30
expect 3 "rewrap --latest under a disabled key is refused" -- "$EVSCTL" volume rewrap old --latest
check "old is left as it was" 'expect_tokens=$(n_tokens "$T/old.img"); [ "$expect_tokens" = 1 ]'
expect 0 "schedule st's deletion" -- "$EVSCTL" key schedule-deletion st --days 7
for v in old new; do
        check "$v does not unwrap with st pending deletion" '! "$UNWRAP" "$T/evs-cryptd.conf" "$T/$v.img" >/dev/null 2>&1'
done
expect 3 "rotating a pending-deletion key is refused" -- "$EVSCTL" key rotate st
check "reason: pending deletion" '[[ "$err" == *"pending deletion"* ]]'
expect 0 "cancel deletion" -- "$EVSCTL" key cancel-deletion st
expect 0 "enable st" -- "$EVSCTL" key enable st
for v in old new; do
        check "$v opens again" 'opens "$T/$v.img"'
done

# --- images follow the same way ---
truncate -s 8M "$T/src.raw"
expect 0 "import an image under rot (version 3)" -- "$EVSCTL" --json image import "$T/src.raw" --name img1 --key rot
IMG_PATH=$(jq_ 'd["path"]' <<<"$out")
check "the image file's token records version 3" '[ "$(token_version "$IMG_PATH")" = 3 ]'
expect 0 "rotate rot to version 4" -- "$EVSCTL" key rotate rot
expect 2 "image rewrap needs --key or --latest" -- "$EVSCTL" image rewrap img1
expect 0 "image rewrap --latest" -- "$EVSCTL" image rewrap img1 --latest
check "it says the newest version" '[[ "$out" == *"re-wrapped under the newest version of key rot"* ]]'
check "the image file's token records version 4, one token" '[ "$(token_version "$IMG_PATH" "$(cryptsetup luksDump "$IMG_PATH" | sed -n "s/^ *\([0-9]*\): evs-kms/\1/p" | head -1)")" = 4 ] && [ "$(n_tokens "$IMG_PATH")" = 1 ]'
check "the image opens its keyslot" 'opens "$IMG_PATH"'

# --- a restart keeps everything; the key file holds every version ---
stop_daemon
start_daemon
expect 0 "key show after restart" -- "$EVSCTL" --json key show rot
check "rot still version 4, period 365" '[ "$(jq_ "d[\"version\"],d[\"rotation_days\"]" <<<"$out")" = "(4, 365)" ]'
check "key file: format version 2, versions 2..4" \
        '[ "$(jq_ "d[\"version\"],[v[\"version\"] for v in d[\"versions\"]]" <"$T/state/keys/$KEY.json")" = "(2, [2, 3, 4])" ]'
for v in v1 v2 v3 old new; do
        check "$v opens its keyslot after the restart" 'opens "$T/$v.img"'
done

[ "$failed" = 0 ] || { echo "--- daemon log"; tail -50 "$T/daemon.log"; }
tap_done
