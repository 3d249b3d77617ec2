#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test: a full file system. The state directory and the disks are on a small tmpfs (mounted
# in a private mount namespace of the test's own); once it is full, key writes, volume create and image import
# fail with exit 1 and "No space left on device", what was there stays as it was, nothing half-made is listed
# or left as a LUKS2 header, and once space is freed the same commands work, without --force.
#   test-enospc.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST
set -uo pipefail

if [ "${EVS_ENOSPC_NS:-}" != 1 ]; then
        command -v unshare >/dev/null || { echo "SKIP: unshare (util-linux) is not installed"; exit 77; }
        [ "$(id -u)" = 0 ] || { echo "SKIP: mounting a tmpfs needs root"; exit 77; }
        EVS_ENOSPC_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3")
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup is not installed"; exit 77; }

T=$(mktemp -d /tmp/evs-enospc.XXXXXX)
PID=
cleanup() {
        [ -n "$PID" ] && kill "$PID" 2>/dev/null
        wait 2>/dev/null
        umount "$T/fs" 2>/dev/null
        rm -rf "$T"
}
trap cleanup EXIT
mkdir "$T/fs"
mount -t tmpfs -o size=64m,mode=0755 evs-enospc "$T/fs" || { echo "Bail out! cannot mount a tmpfs"; exit 1; }
FS=$T/fs

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$FS/state
BusPath=$T/bus
CONF
"$DAEMON" --config "$T/evs-cryptd.conf" 2>"$T/daemon.log" &
PID=$!
for _ in $(seq 200); do [ -S "$T/bus" ] && break; sleep 0.05; done
export EVS_BUS=$T/bus

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
jq_() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$@"; }
opens() { "$UNWRAP" "$T/evs-cryptd.conf" "$1" 2>/dev/null | cryptsetup open --test-passphrase --key-file=- "$1" 2>/dev/null; }

expect 0 "key k1 while there is room" -- "$EVSCTL" key create k1
truncate -s 24M "$FS/v.img" # sparse: its blocks are allocated only when written
head -c $((2 * 1024 * 1024)) /dev/urandom >"$T/src.raw"
before=$(ls "$FS/state/keys" | sort)

# Fill it up, to the last block.
dd if=/dev/zero of="$FS/fill" bs=1M status=none 2>/dev/null
dd if=/dev/zero of="$FS/fill2" bs=4k status=none 2>/dev/null
check "the file system is full" '! head -c 4096 /dev/zero >"$FS/probe" 2>/dev/null'
rm -f "$FS/probe"

expect 1 "key create on a full file system exits 1" -- "$EVSCTL" key create k2
check "the reason names the file and says No space left on device" \
        '[[ "$err" == *"cannot write $FS/state/keys/"*"No space left on device"* ]]'
expect 1 "key disable on a full file system exits 1" -- "$EVSCTL" key disable k1
check "the reason says No space left on device" '[[ "$err" == *"No space left on device"* ]]'
expect 0 "the store still loads" -- "$EVSCTL" --json key list
check "k1 is still enabled, no k2, no other key file" \
        '[ "$(jq_ "sorted((k[\"alias\"], k[\"state\"]) for k in d)" <<<"$out")" = "[('"'"'k1'"'"', '"'"'enabled'"'"')]" ] && [ "$(ls "$FS/state/keys" | sort)" = "$before" ]'

expect 1 "volume create on a full file system exits 1" -- "$EVSCTL" volume create "$FS/v.img" --id v1 --key k1
check "the reason says No space left on device" '[[ "$err" == *"No space left on device"* ]]'
check "the disk holds no LUKS2 header (nothing half-made)" '! cryptsetup isLuks "$FS/v.img" && ! blkid -p "$FS/v.img" >/dev/null 2>&1'
expect 1 "image import on a full file system exits 1" -- "$EVSCTL" image import "$T/src.raw" --name im1 --key k1
check "the reason says No space left on device" '[[ "$err" == *"No space left on device"* ]]'
expect 0 "image list" -- "$EVSCTL" --json image list
check "no image listed, no file left in the image directory" \
        '[ "$(jq_ "len(d)" <<<"$out")" = 0 ] && [ -z "$(ls -A "$FS/state/images" 2>/dev/null)" ]'
check "the daemon is still running" 'kill -0 "$PID"'

rm -f "$FS/fill" "$FS/fill2"
expect 0 "with room again: key create" -- "$EVSCTL" key create k2
expect 0 "key disable" -- "$EVSCTL" key disable k1
expect 0 "key enable" -- "$EVSCTL" key enable k1
expect 0 "volume create, the same command, without --force" -- "$EVSCTL" volume create "$FS/v.img" --id v1 --key k1
check "the volume opens with its token" 'opens "$FS/v.img"'
expect 0 "image import" -- "$EVSCTL" image import "$T/src.raw" --name im1 --key k1
check "the image opens with its token" 'opens "$(ls "$FS"/state/images/*.img)"'

kill "$PID"; wait "$PID"; rc=$?; PID=
check "the daemon exits cleanly" '[ "$rc" = 0 ]'
tap_done
