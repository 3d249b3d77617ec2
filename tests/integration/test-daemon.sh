#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test: evs-cryptd on temporary paths, driven by evsctl over its bus.
#   test-daemon.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST
set -uo pipefail

DAEMON=$1 EVSCTL=$2 UNWRAP=$3
for tool in cryptsetup mkfs.ext4 setpriv; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done

T=$(mktemp -d /tmp/evs-test.XXXXXX)
chmod 0755 "$T"
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

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok $((passed + failed)) - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok $((passed + failed)) - $1"; }
# expect CODE DESCRIPTION -- COMMAND...: runs it, checks the exit code, keeps stdout in $out and stderr in $err.
expect() {
        local want=$1 what=$2; shift 3
        out=$("$@" 2>"$T/err"); local rc=$?
        err=$(cat "$T/err")
        if [ "$rc" = "$want" ]; then ok "$what"; else not_ok "$what (exit $rc, wanted $want): $err"; fi
}
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }
jq_() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# --- key lifecycle ---
expect 0 "status" -- "$EVSCTL" status
expect 0 "create key app1" -- "$EVSCTL" --json key create app1 --description "App one"
check "new key is enabled, local, no deletion date" \
        '[ "$(jq_ "d[\"state\"],d[\"backend\"],d[\"alias\"],d[\"deletion_date\"]" <<<"$out")" = "('"'"'enabled'"'"', '"'"'local'"'"', '"'"'app1'"'"', None)" ]'
APP1=$(jq_ 'd["id"]' <<<"$out")
expect 1 "alias is unique" -- "$EVSCTL" key create app1
expect 2 "invalid alias refused" -- "$EVSCTL" key create 'bad alias!'
expect 0 "default key created on first use" -- "$EVSCTL" --json key show evs/default
check "default key is enabled" '[ "$(jq_ "d[\"state\"]" <<<"$out")" = enabled ]'
expect 3 "default key cannot be disabled" -- "$EVSCTL" key disable evs/default
check "reason names the default key" '[[ "$err" == *"evs/default can never be disabled"* ]]'
expect 3 "default key cannot be scheduled for deletion" -- "$EVSCTL" key schedule-deletion evs/default --days 30
expect 0 "disable app1" -- "$EVSCTL" --json key disable app1
check "app1 disabled" '[ "$(jq_ "d[\"state\"]" <<<"$out")" = disabled ]'
expect 0 "enable app1 by id" -- "$EVSCTL" --json key enable "$APP1"
check "app1 enabled" '[ "$(jq_ "d[\"state\"]" <<<"$out")" = enabled ]'
expect 2 "deletion window below 7 days refused" -- "$EVSCTL" key schedule-deletion app1 --days 6
expect 2 "deletion window above 1096 days refused" -- "$EVSCTL" key schedule-deletion app1 --days 1097
expect 2 "schedule-deletion without --days is a usage error" -- "$EVSCTL" key schedule-deletion app1
expect 0 "schedule deletion in 7 days" -- "$EVSCTL" --json key schedule-deletion app1 --days 7
check "pending-deletion with a date" \
        '[ "$(jq_ "d[\"state\"]" <<<"$out")" = pending-deletion ] && [ "$(jq_ "d[\"deletion_date\"] is not None" <<<"$out")" = True ]'
expect 3 "enable refused while pending deletion" -- "$EVSCTL" key enable app1
check "reason says cancel first" '[[ "$err" == *"cancel the deletion first"* ]]'
expect 3 "second schedule refused" -- "$EVSCTL" key schedule-deletion app1 --days 30
expect 0 "cancel deletion" -- "$EVSCTL" --json key cancel-deletion app1
check "cancelled key stays disabled, no date" \
        '[ "$(jq_ "d[\"state\"],d[\"deletion_date\"]" <<<"$out")" = "('"'"'disabled'"'"', None)" ]'
expect 3 "cancel on a disabled key refused" -- "$EVSCTL" key cancel-deletion app1
expect 4 "unknown key" -- "$EVSCTL" key show no-such-key
expect 0 "key list --json" -- "$EVSCTL" --json key list
check "list holds app1 and evs/default" '[ "$(jq_ "sorted(k[\"alias\"] for k in d)" <<<"$out")" = "['"'"'app1'"'"', '"'"'evs/default'"'"']" ]'
expect 2 "unknown verb is a usage error" -- "$EVSCTL" key frobnicate

# --- volumes on image files ---
truncate -s 64M "$T/vol1.img"
expect 3 "volume create refused with a disabled key" -- "$EVSCTL" volume create "$T/vol1.img" --id vol1 --key app1
expect 0 "re-enable app1" -- "$EVSCTL" key enable app1
expect 2 "invalid volume id refused" -- "$EVSCTL" volume create "$T/vol1.img" --id 'bad/id' --key app1
expect 0 "volume create" -- "$EVSCTL" --json volume create "$T/vol1.img" --id vol1 --key app1
check "volume create shows key and state" \
        '[ "$(jq_ "d[\"id\"],d[\"state\"],d[\"key_id\"],d[\"key_state\"],d[\"backend\"]" <<<"$out")" = "('"'"'vol1'"'"', '"'"'detached'"'"', '"'"'$APP1'"'"', '"'"'enabled'"'"', '"'"'local'"'"')" ]'
dump=$(cryptsetup luksDump "$T/vol1.img")
check "luksDump: LUKS2" 'grep -q "^Version:[[:space:]]*2" <<<"$dump"'
check "luksDump: label is the volume id" 'grep -q "^Label:[[:space:]]*vol1$" <<<"$dump"'
check "luksDump: subsystem evs" 'grep -q "^Subsystem:[[:space:]]*evs$" <<<"$dump"'
check "luksDump: aes-xts-plain64, 4096-byte sectors" 'grep -q "cipher: aes-xts-plain64" <<<"$dump" && grep -q "sector: 4096 \[bytes\]" <<<"$dump"'
check "luksDump: 512-bit key, pbkdf2 with 1000 iterations" 'grep -q "Key:[[:space:]]*512 bits" <<<"$dump" && grep -q "PBKDF:[[:space:]]*pbkdf2" <<<"$dump" && grep -q "Iterations:[[:space:]]*1000$" <<<"$dump"'
check "luksDump: one keyslot, one evs-kms token bound to it" \
        '[ "$(grep -c "^  [0-9]*: luks2" <<<"$dump")" = 1 ] && grep -q "^  0: evs-kms" <<<"$dump"'
check "the keyslot opens with the unwrapped data key" \
        '"$UNWRAP" "$T/evs-cryptd.conf" "$T/vol1.img" | cryptsetup open --test-passphrase --key-file=- "$T/vol1.img"'
check "a wrong key does not open it" \
        '! head -c 32 /dev/urandom | cryptsetup open --test-passphrase --key-file=- "$T/vol1.img" 2>/dev/null'

sum() { sha256sum "$1" | cut -d" " -f1; }
before=$(sum "$T/vol1.img")
expect 8 "formatting over an existing LUKS header refused" -- "$EVSCTL" volume create "$T/vol1.img" --id vol9
check "reason names the signature" '[[ "$err" == *"crypto_LUKS"* ]]'
check "LUKS image unchanged" '[ "$(sum "$T/vol1.img")" = "$before" ]'

truncate -s 64M "$T/ext4.img"
mkfs.ext4 -q -F "$T/ext4.img"
before=$(sum "$T/ext4.img")
expect 8 "formatting over ext4 refused" -- "$EVSCTL" volume create "$T/ext4.img" --id vol2
check "reason names ext4" '[[ "$err" == *"ext4"* ]]'
check "ext4 image unchanged" '[ "$(sum "$T/ext4.img")" = "$before" ]'
expect 0 "--force formats over ext4" -- "$EVSCTL" volume create "$T/ext4.img" --id vol2 --force
check "forced volume is on the default key" '"$EVSCTL" --json volume show vol2 | grep -q "\"key_alias\":\"evs/default\""'

expect 0 "volume list --json" -- "$EVSCTL" --json volume list
check "list has vol1 and vol2 detached" '[ "$(jq_ "[(v[\"id\"],v[\"state\"]) for v in d]" <<<"$out")" = "[('"'"'vol1'"'"', '"'"'detached'"'"'), ('"'"'vol2'"'"', '"'"'detached'"'"')]" ]'
expect 4 "unknown volume" -- "$EVSCTL" volume show nosuchvol

# --- access control ---
expect 7 "a non-root caller is refused" -- setpriv --reuid=65534 --regid=65534 --clear-groups "$EVSCTL" key list
check "reason says access denied" '[[ "$err" == *"Access denied"* ]]'

# --- bad configuration ---
printf '[Daemon]\nBogus=1\n' >"$T/bad.conf"
check "unknown config key reported with file and line" \
        '{ "$DAEMON" --config "$T/bad.conf" 2>&1 || true; } | grep -q "bad.conf:2: unknown key Bogus= in \[Daemon\]"'

# --- the daemon's journal-style log has the structured fields ---
check "volume creation logged with MESSAGE_ID and key" 'grep -q "MESSAGE_ID=8fca4fe18b024699a3bd561abc59b8cb EVS_VOLUME_ID=vol1" "$T/daemon.log"'
check "no secret-looking material in the log" '! grep -qi "wrapped\|material" "$T/daemon.log"'

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
