#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test: evs-cryptd on temporary paths, driven by evsctl over its bus.
#   test-daemon.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3")
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
# Under `meson test --setup valgrind` the daemon runs under valgrind: its exit status at the end says.
${EVS_VALGRIND_WRAPPER:-} "$DAEMON" --config "$T/evs-cryptd.conf" 2>"$T/daemon.log" &
PID=$!
for _ in $(seq 600); do [ -S "$T/run/bus" ] && break; sleep 0.05; done
export EVS_BUS=$T/run/bus

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
jq_() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# --- key lifecycle ---
expect 0 "status" -- "$EVSCTL" status
check "status text has no JSON fragments" '! grep -q "[][{}\"]" <<<"$out" && grep -q "KMS backends: *local (default local)" <<<"$out"'
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
expect 2 "an empty key reference is a usage error, not evs/default" -- "$EVSCTL" key show ""
check "reason: the argument is empty" '[[ "$err" == *"argument 1 is empty"* ]] && [ -z "$out" ]'
expect 2 "an empty --key is a usage error" -- "$EVSCTL" volume rewrap vol1 --key ""
expect 2 "an empty alias is a usage error" -- "$EVSCTL" key create ""
expect 0 "key list --json" -- "$EVSCTL" --json key list
check "list holds app1 and evs/default" '[ "$(jq_ "sorted(k[\"alias\"] for k in d)" <<<"$out")" = "['"'"'app1'"'"', '"'"'evs/default'"'"']" ]'
expect 2 "unknown verb is a usage error" -- "$EVSCTL" key frobnicate

# --- volumes on image files ---
truncate -s 64M "$T/vol1.img"
expect 3 "volume create refused with a disabled key" -- "$EVSCTL" volume create "$T/vol1.img" --id vol1 --key app1
expect 0 "re-enable app1" -- "$EVSCTL" key enable app1
expect 2 "invalid volume id refused" -- "$EVSCTL" volume create "$T/vol1.img" --id 'bad/id' --key app1
for id in . .. .hidden; do
        expect 2 "volume id '$id' (a leading dot) refused" -- "$EVSCTL" volume create "$T/vol1.img" --id "$id" --key app1
done
check "reason states the rule" '[[ "$err" == *"not starting with '"'"'.'"'"'"* ]]'
check "nothing was formatted" '! cryptsetup isLuks "$T/vol1.img"'
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

truncate -s 32M "$T/rel.img"
expect 0 "a bare relative file name is a device, not a volume id" -- sh -c 'cd "$1" && "$2" volume create rel.img --id volrel' sh "$T" "$EVSCTL"
check "it was formatted" 'cryptsetup isLuks "$T/rel.img"'
expect 0 "volume list --json" -- "$EVSCTL" --json volume list
check "list has vol1, vol2, volrel detached" '[ "$(jq_ "[(v[\"id\"],v[\"state\"]) for v in d]" <<<"$out")" = "[('"'"'vol1'"'"', '"'"'detached'"'"'), ('"'"'vol2'"'"', '"'"'detached'"'"'), ('"'"'volrel'"'"', '"'"'detached'"'"')]" ]'
expect 4 "unknown volume" -- "$EVSCTL" volume show nosuchvol

# --- access control ---
expect 7 "a non-root caller is refused" -- setpriv --reuid=65534 --regid=65534 --clear-groups "$EVSCTL" key list
check "reason says access denied" '[[ "$err" == *"Access denied"* ]]'

# --- bad configuration ---
printf '[Daemon]\nBogus=1\n' >"$T/bad.conf"
check "unknown config key reported with file and line" \
        '{ "$DAEMON" --config "$T/bad.conf" 2>&1 || true; } | grep -q "bad.conf:2: unknown key Bogus= in \[Daemon\]"'

# --- one daemon per state directory, and per bus socket ---
printf '[Daemon]\nStateDirectory=%s/state\nBusPath=%s/run/bus2\n' "$T" "$T" >"$T/same-state.conf"
out=$("$DAEMON" --config "$T/same-state.conf" 2>&1); rc=$?
check "a second daemon on the same state directory exits 1" '[ "$rc" = 1 ]'
check "its one line names the directory and the daemon holding it" \
        '[ "$(wc -l <<<"$out")" = 1 ] && [[ "$out" == *"State directory $T/state is in use by another evs-cryptd (PID $PID, $T/state/daemon.lock is locked): not starting."* ]]'
check "it never bound its own socket" '[ ! -e "$T/run/bus2" ]'
printf '[Daemon]\nStateDirectory=%s/state2\nBusPath=%s/run/bus\n' "$T" "$T" >"$T/same-bus.conf"
out=$("$DAEMON" --config "$T/same-bus.conf" 2>&1); rc=$?
check "a second daemon on the same bus socket exits 1" '[ "$rc" = 1 ]'
check "its one line names the socket" \
        '[ "$(wc -l <<<"$out")" = 1 ] && [[ "$out" == *"BusPath=$T/run/bus is served by another process (another evs-cryptd, or evs-cryptd.socket): not starting."* ]]'
check "the first daemon still answers on it, with its own state" \
        '"$EVSCTL" status | grep -q "State directory: *$T/state$"'
# A socket file left by a daemon that is gone (killed: it could not unlink it) is taken over.
printf '[Daemon]\nStateDirectory=%s/state2\nBusPath=%s/other-bus\n' "$T" "$T" >"$T/other.conf"
"$DAEMON" --config "$T/other.conf" 2>/dev/null & OTHER=$!
for _ in $(seq 600); do EVS_BUS=$T/other-bus "$EVSCTL" status >/dev/null 2>&1 && break; sleep 0.05; done
kill -9 "$OTHER"; wait "$OTHER" 2>/dev/null
check "a killed daemon leaves its socket file" '[ -S "$T/other-bus" ]'
"$DAEMON" --config "$T/other.conf" 2>"$T/other.log" & OTHER=$!
for _ in $(seq 600); do EVS_BUS=$T/other-bus "$EVSCTL" status >/dev/null 2>&1 && break; sleep 0.05; done
check "a new daemon takes the stale socket over and answers" 'EVS_BUS=$T/other-bus "$EVSCTL" status | grep -q "State directory: *$T/state2$"'
kill "$OTHER"; wait "$OTHER" 2>/dev/null

# --- the daemon's journal-style log has the structured fields ---
check "volume creation logged with MESSAGE_ID and key" 'grep -q "MESSAGE_ID=8fca4fe18b024699a3bd561abc59b8cb EVS_VOLUME_ID=vol1" "$T/daemon.log"'
check "no secret-looking material in the log" '! grep -qi "wrapped\|material" "$T/daemon.log"'
check "key creation logged with its MESSAGE_ID" 'grep "Created key .* alias app1 on backend local\." "$T/daemon.log" | grep -q "MESSAGE_ID=0ac18d2646624ec9b446c278a70da619"'
# Without device-mapper (these hosts) an attach fails, and that is not a refusal: the key said nothing.
if [ ! -e /dev/mapper/control ]; then
        expect 1 "attach without device-mapper fails" -- "$EVSCTL" volume attach vol1
        check "the failure is logged under ATTACH_FAILED with EVS_RESULT=failed" 'grep "no device-mapper" "$T/daemon.log" | grep -q "MESSAGE_ID=6b0141baf08b4eb0876a93584405bb81 EVS_VOLUME_ID=vol1 EVS_RESULT=failed"'
        check "and not under the refused MESSAGE_ID" '! grep "no device-mapper" "$T/daemon.log" | grep -q "dc7f4e099cd84e59a063ff0e2c88110c"'
fi

# --- rewrap: the data key under a second CMK, then the first CMK disabled ---
datasum() { dd if="$1" bs=1M skip=16 2>/dev/null | sha256sum | cut -d" " -f1; }
expect 0 "create key app2" -- "$EVSCTL" --json key create app2
APP2=$(jq_ 'd["id"]' <<<"$out")
expect 2 "rewrap without --key is a usage error" -- "$EVSCTL" volume rewrap vol1
expect 4 "rewrap to an unknown key" -- "$EVSCTL" volume rewrap vol1 --key no-such-key
expect 4 "rewrap of an unknown volume" -- "$EVSCTL" volume rewrap nosuchvol --key app2
expect 0 "disable app2" -- "$EVSCTL" key disable app2
before=$(sum "$T/vol1.img")
expect 3 "rewrap to a disabled key refused" -- "$EVSCTL" volume rewrap vol1 --key app2
check "reason names the disabled key as typed, beside its id" '[[ "$err" == *"key app2 ($APP2) is disabled"* ]]'
truncate -s 32M "$T/typed.img"
expect 3 "volume create on the disabled key, named with its backend" -- "$EVSCTL" volume create "$T/typed.img" --id voltyped --key local:app2
check "the refusal names it as typed, beside its id" '[[ "$err" == *"key local:app2 ($APP2) is disabled"* ]]'
expect 3 "image import on the disabled key" -- "$EVSCTL" image import "$T/typed.img" --name typed --key app2
check "the refusal names it as typed, beside its id" '[[ "$err" == *"key app2 ($APP2) is disabled"* ]]'
check "refused rewrap left vol1 unchanged" '[ "$(sum "$T/vol1.img")" = "$before" ]'
expect 0 "enable app2" -- "$EVSCTL" key enable app2
data_before=$(datasum "$T/vol1.img")
expect 0 "rewrap vol1 to app2" -- "$EVSCTL" --json volume rewrap vol1 --key app2
check "vol1 now shows app2, enabled" \
        '[ "$(jq_ "d[\"key_id\"],d[\"key_alias\"],d[\"key_state\"]" <<<"$out")" = "('"'"'$APP2'"'"', '"'"'app2'"'"', '"'"'enabled'"'"')" ]'
check "the data area is untouched" '[ "$(datasum "$T/vol1.img")" = "$data_before" ]'
expect 0 "disable app1" -- "$EVSCTL" key disable app1
check "vol1 still unwraps and opens its keyslot with app1 disabled" \
        '"$UNWRAP" "$T/evs-cryptd.conf" "$T/vol1.img" | cryptsetup open --test-passphrase --key-file=- "$T/vol1.img"'
dump=$(cryptsetup luksDump "$T/vol1.img")
tok=$(sed -n 's/^  \([0-9]*\): evs-kms$/\1/p' <<<"$dump")
check "luksDump: exactly one evs-kms token" '[ "$(grep -c ": evs-kms$" <<<"$dump")" = 1 ]'
check "luksDump: still one keyslot" '[ "$(grep -c "^  [0-9]*: luks2" <<<"$dump")" = 1 ]'
check "the token names app2" 'cryptsetup token export --token-id "$tok" "$T/vol1.img" | grep -q "\"evs_key_id\":\"$APP2\".*\"evs_key_alias\":\"app2\""'
expect 0 "volume show after rewrap" -- "$EVSCTL" --json volume show vol1
check "show: app2, enabled" '[ "$(jq_ "d[\"key_alias\"],d[\"key_state\"]" <<<"$out")" = "('"'"'app2'"'"', '"'"'enabled'"'"')" ]'
expect 3 "rewrap back to the disabled app1 refused" -- "$EVSCTL" volume rewrap vol1 --key app1
expect 0 "rewrap by device path to evs/default" -- "$EVSCTL" --json volume rewrap "$T/vol1.img" --key evs/default
check "now on evs/default" '[ "$(jq_ "d[\"key_alias\"]" <<<"$out")" = evs/default ]'
check "still one evs-kms token" '[ "$(cryptsetup luksDump "$T/vol1.img" | grep -c ": evs-kms$")" = 1 ]'
check "still opens" '"$UNWRAP" "$T/evs-cryptd.conf" "$T/vol1.img" | cryptsetup open --test-passphrase --key-file=- "$T/vol1.img"'
check "data area still untouched" '[ "$(datasum "$T/vol1.img")" = "$data_before" ]'
check "rewrap logged" 'grep -q "Volume vol1 (.*): data key re-wrapped from key $APP1 (local) to key $APP2 (local)" "$T/daemon.log"'

# --- encrypted images ---
head -c 3000001 /dev/urandom >"$T/src.raw"       # not a multiple of the sector size
chmod 0444 "$T/src.raw"
SRC=$(sum "$T/src.raw")
MTIME=$(stat -c %Y.%s "$T/src.raw")
expect 2 "image import without --name is a usage error" -- "$EVSCTL" image import "$T/src.raw"
expect 4 "import of a missing file" -- "$EVSCTL" image import "$T/nosuch.raw" --name x
check "reason: no such file" '[[ "$err" == *"No such file"* ]]'
expect 2 "import of a directory" -- "$EVSCTL" image import "$T" --name x
check "reason: a directory" '[[ "$err" == *"is a directory"* ]]'
: >"$T/empty.raw"
expect 2 "import of an empty file" -- "$EVSCTL" image import "$T/empty.raw" --name x
check "reason: empty" '[[ "$err" == *"is empty"* ]]'
expect 2 "import of a character device" -- "$EVSCTL" image import /dev/null --name x
check "reason: not a file or block device" '[[ "$err" == *"neither a regular file nor a block device"* ]]'
expect 2 "invalid image name" -- "$EVSCTL" image import "$T/src.raw" --name 'bad name'
expect 2 "an image name with a leading dot refused" -- "$EVSCTL" image import "$T/src.raw" --name .base
expect 3 "import with a disabled key refused" -- "$EVSCTL" image import "$T/src.raw" --name base --key app1
mkdir -p "$T/state/images" && truncate -s 20M "$T/state/images/.img-0123456789ab.img.tmp"   # a crashed import
expect 0 "image import with app2" -- "$EVSCTL" --json image import "$T/src.raw" --name base --key app2
check "the leftover of an interrupted import is removed" '[ ! -e "$T/state/images/.img-0123456789ab.img.tmp" ] && [ "$(ls -A "$T/state/images" | grep -c tmp)" = 0 ]'
IMG=$(jq_ 'd["id"]' <<<"$out")
IMGFILE=$(jq_ 'd["path"]' <<<"$out")
check "import shows id, name, key, state, cipher, size, source" \
        '[ "$(jq_ "d[\"name\"],d[\"key_id\"],d[\"key_state\"],d[\"cipher\"],d[\"size\"],d[\"source\"]" <<<"$out")" = "('"'"'base'"'"', '"'"'$APP2'"'"', '"'"'enabled'"'"', '"'"'aes-xts-plain64'"'"', 3000001, '"'"'$T/src.raw'"'"')" ]'
check "image id is img-<hex>" '[[ "$IMG" =~ ^img-[0-9a-f]{12}$ ]]'
check "the source is unchanged (content and mtime)" '[ "$(sum "$T/src.raw")" = "$SRC" ] && [ "$(stat -c %Y.%s "$T/src.raw")" = "$MTIME" ]'
check "image file under the state directory" '[ "$IMGFILE" = "$T/state/images/$IMG.img" ] && [ -f "$IMGFILE" ]'
check "record written as images/<id>.json" '[ -f "$T/state/images/$IMG.json" ] && grep -q "\"name\": *\"base\"" "$T/state/images/$IMG.json"'
check "image size = 16 MiB header + data rounded up to 4096" '[ "$(stat -c %s "$IMGFILE")" = $((16777216 + 3002368)) ]'
dump=$(cryptsetup luksDump "$IMGFILE")
check "image: LUKS2, label = id, subsystem evs, aes-xts-plain64/4096, one keyslot, one evs-kms token" \
        'grep -q "^Label:[[:space:]]*$IMG$" <<<"$dump" && grep -q "^Subsystem:[[:space:]]*evs$" <<<"$dump" && grep -q "cipher: aes-xts-plain64" <<<"$dump" && grep -q "sector: 4096 \[bytes\]" <<<"$dump" && [ "$(grep -c "^  [0-9]*: luks2" <<<"$dump")" = 1 ] && [ "$(grep -c ": evs-kms$" <<<"$dump")" = 1 ]'
check "image header names its CMK" 'cryptsetup token export --token-id 0 "$IMGFILE" | grep -q "\"evs_key_id\":\"$APP2\".*\"evs_volume_id\":\"$IMG\""'
check "image keyslot opens with its unwrapped data key" \
        '"$UNWRAP" "$T/evs-cryptd.conf" "$IMGFILE" | cryptsetup open --test-passphrase --key-file=- "$IMGFILE"'
check "the data area is not the plaintext" '[ "$(tail -c +16777217 "$IMGFILE" | head -c 3000001 | sha256sum | cut -d" " -f1)" != "$SRC" ]'
# Byte-exact, decrypted by libcryptsetup's own (userspace, offline) LUKS2 decryption: same volume key in a
# detached header with data offset 0 over a copy of the data area.
"$UNWRAP" "$T/evs-cryptd.conf" "$IMGFILE" >"$T/dk.bin"
cryptsetup luksDump -q --dump-volume-key --volume-key-file "$T/vk.bin" --key-file "$T/dk.bin" "$IMGFILE" >/dev/null
tail -c +16777217 "$IMGFILE" >"$T/data.bin"
truncate -s 16M "$T/hdr0"
cryptsetup luksFormat -q --type luks2 --header "$T/hdr0" --offset 0 --cipher aes-xts-plain64 --key-size 512 \
        --sector-size 4096 --volume-key-file "$T/vk.bin" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --key-file "$T/dk.bin" "$T/data.bin"
cryptsetup reencrypt -q --decrypt --header "$T/hdr0" --force-offline-reencrypt --key-file "$T/dk.bin" "$T/data.bin"
check "decrypted data area = the source, byte for byte" '[ "$(head -c 3000001 "$T/data.bin" | sha256sum | cut -d" " -f1)" = "$SRC" ]'
check "the padding after it decrypts to zeros" '[ "$(tail -c +3000002 "$T/data.bin" | tr -d "\0" | wc -c)" = 0 ]'
rm -f "$T/dk.bin" "$T/vk.bin" "$T/data.bin" "$T/hdr0"
expect 1 "a second image of the same name refused" -- "$EVSCTL" image import "$T/src.raw" --name base
check "reason: exists" '[[ "$err" == *"named base exists already"* ]]'
expect 0 "import with the default key" -- "$EVSCTL" --json image import "$T/vol1.img" --name second
IMG2=$(jq_ 'd["id"]' <<<"$out")
check "default key, size of the source" '[ "$(jq_ "d[\"key_alias\"],d[\"size\"]" <<<"$out")" = "('"'"'evs/default'"'"', 67108864)" ]'
expect 0 "image list --json" -- "$EVSCTL" --json image list
check "list: base and second with the documented fields" \
        '[ "$(jq_ "[(i[\"name\"],sorted(k for k in (\"id\",\"name\",\"key_id\",\"key_state\",\"cipher\",\"size\",\"source\") if k in i)==sorted((\"id\",\"name\",\"key_id\",\"key_state\",\"cipher\",\"size\",\"source\"))) for i in d]" <<<"$out")" = "[('"'"'base'"'"', True), ('"'"'second'"'"', True)]" ]'
expect 0 "image list (table)" -- "$EVSCTL" image list
check "table has a header and two rows" '[ "$(wc -l <<<"$out")" = 3 ] && grep -q "^IMAGE" <<<"$out"'
check "sizes are human-readable (64.0M), headers without spaces (KEY_STATE)" 'grep "^$IMG2 " <<<"$out" | grep -q " 64.0M " && [ "$(head -n 1 <<<"$out" | wc -w)" = 7 ] && head -n 1 <<<"$out" | grep -q " KEY_STATE "'
expect 0 "image show (text)" -- "$EVSCTL" image show second
check "size in both units" 'grep -q "size: 64.0M (67108864 bytes)" <<<"$out"'
expect 0 "image show by name" -- "$EVSCTL" --json image show base
check "show by name gives the id" '[ "$(jq_ "d[\"id\"]" <<<"$out")" = "$IMG" ]'
expect 0 "image show by id" -- "$EVSCTL" --json image show "$IMG"
expect 4 "image show of an unknown image" -- "$EVSCTL" image show nosuchimage
data_before=$(datasum "$IMGFILE")
expect 2 "image rewrap without --key is a usage error" -- "$EVSCTL" image rewrap base
expect 4 "image rewrap of an unknown image" -- "$EVSCTL" image rewrap nosuchimage --key evs/default
expect 0 "image rewrap to evs/default" -- "$EVSCTL" --json image rewrap base --key evs/default
check "image now on evs/default" '[ "$(jq_ "d[\"id\"],d[\"key_alias\"],d[\"key_state\"]" <<<"$out")" = "('"'"'$IMG'"'"', '"'"'evs/default'"'"', '"'"'enabled'"'"')" ]'
check "its record follows" 'grep -q "\"key_alias\": *\"evs/default\"" "$T/state/images/$IMG.json"'
check "its header has one evs-kms token, on evs/default" \
        '[ "$(cryptsetup luksDump "$IMGFILE" | grep -c ": evs-kms$")" = 1 ] && t=$(cryptsetup luksDump "$IMGFILE" | sed -n "s/^  \([0-9]*\): evs-kms$/\1/p") && cryptsetup token export --token-id "$t" "$IMGFILE" | grep -q "\"evs_key_alias\":\"evs/default\""'
check "the rewrapped image still opens" \
        '"$UNWRAP" "$T/evs-cryptd.conf" "$IMGFILE" | cryptsetup open --test-passphrase --key-file=- "$IMGFILE"'
check "its data area is untouched" '[ "$(datasum "$IMGFILE")" = "$data_before" ]'
expect 0 "image rewrap back to app2 by id" -- "$EVSCTL" --json image rewrap "$IMG" --key app2
check "back on app2" '[ "$(jq_ "d[\"key_id\"]" <<<"$out")" = "$APP2" ]'
expect 0 "disable app2" -- "$EVSCTL" key disable app2
expect 0 "image show with its key disabled" -- "$EVSCTL" --json image show base
check "key_state disabled" '[ "$(jq_ "d[\"key_state\"]" <<<"$out")" = disabled ]'
expect 0 "image delete" -- "$EVSCTL" image delete base
check "file and record gone" '[ ! -e "$IMGFILE" ] && [ ! -e "$T/state/images/$IMG.json" ]'
expect 0 "the CMK is untouched by the delete" -- "$EVSCTL" --json key show app2
check "app2 still exists, still disabled" '[ "$(jq_ "d[\"id\"],d[\"state\"]" <<<"$out")" = "('"'"'$APP2'"'"', '"'"'disabled'"'"')" ]'
expect 4 "delete again: not found" -- "$EVSCTL" image delete base
expect 0 "delete by id" -- "$EVSCTL" image delete "$IMG2"
expect 0 "image list is empty" -- "$EVSCTL" --json image list
check "empty list" '[ "$(jq_ "len(d)" <<<"$out")" = 0 ]'
check "evs/default still there after deleting its image" '"$EVSCTL" key show evs/default >/dev/null'

# --- a clean stop; under ASan/UBSan the daemon's own report lands in its log ---
# A root peer still connected (authenticated, no BEGIN yet) when SIGTERM comes neither holds up the stop (the
# default flush at exit waited 90 s for it) nor leaks its connection (valgrind and LeakSanitizer check below).
# It waits up to 60 s for the daemon to hang up on it.
coproc HOLD { exec /usr/bin/python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
print(s.recv(256).split(b" ")[0].decode(), flush=True)
s.settimeout(60)
try:
    print("closed" if s.recv(256) == b"" else "data", flush=True)
except socket.timeout:
    print("still-open", flush=True)' "$EVS_BUS"; }
exec {hold_fd}<&"${HOLD[0]}" # bash drops HOLD[] when the peer exits
read -r -t 60 hold_reply <&"$hold_fd"
check "a peer holds a connection across the stop" '[ "${hold_reply:-}" = OK ]'
kill "$PID"; wait "$PID"; rc=$?; PID=
read -r -t 90 hold_end <&"$hold_fd"
check "the daemon hung up on it when it stopped, without waiting for it" '[ "${hold_end:-}" = closed ]'
check "daemon exits cleanly on SIGTERM (under valgrind: no error, no leak)" '[ "$rc" = 0 ]'
check "no sanitizer report from the daemon" '! grep -q "Sanitizer\|runtime error" "$T/daemon.log"'
[ "$failed" = 0 ] || { echo "--- daemon log"; cat "$T/daemon.log"; }

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
