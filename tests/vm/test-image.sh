#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Encrypted images and rewrap in a real kernel (run by tests/vm/evs-vm inside the guest): an imported
# image's data reads back byte-exact through its dm-crypt mapping; a rewrap under an attached volume.
# Disks: vda (serial src-disk: an image source), vdb = vol-rw.
set -u

T=/tmp/evs
mkdir -p "$T"
CONF=$T/evs-cryptd.conf
cat >"$CONF" <<CONF
[Daemon]
StateDirectory=/var/lib/evs-cryptd
BusPath=/run/evs-cryptd/bus
CONF
export EVS_BUS=/run/evs-cryptd/bus

. /usr/lib/evs-tests/tap.sh
field() { echo "$out" | sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; } # from evsctl --json output
sum() { sha256sum "$1" | cut -d' ' -f1; }
headsum() { head -c "$2" "$1" | sha256sum | cut -d' ' -f1; }
blocksize() { blockdev --getsize64 "$1" 2>/dev/null || echo $(( $(cat /sys/class/block/"${1##*/}"/size) * 512 )); }

evs-cryptd --config "$CONF" >>"$T/daemon.log" 2>&1 &
DPID=$!
i=0
until evsctl status >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done

echo "# 1. an image from a raw file (size not a multiple of the sector size)"
head -c 5242999 /dev/urandom >"$T/src.raw"
SRC=$(sum "$T/src.raw")
expect 0 "create key img1" evsctl key create img1
expect 0 "import the file with img1" evsctl --json image import "$T/src.raw" --name base --key img1
out=$(echo "$out" | tr -d '\n ')
IMG=$(field id) FILE=$(field path)
check "image id and file" '[ -n "$IMG" ] && [ -f "$FILE" ]'
check "the source is unchanged" '[ "$(sum "$T/src.raw")" = "$SRC" ]'
expect 0 "attach the image file" evsctl volume attach "$FILE"
check "/dev/mapper/evs-$IMG exists" '[ -b /dev/mapper/evs-$IMG ]'
check "the mapping holds the data area rounded up to 4096 bytes" '[ "$(blocksize /dev/mapper/evs-$IMG)" = 5246976 ]'
check "the mapping's first 5242999 bytes are the source, byte for byte" '[ "$(headsum /dev/mapper/evs-$IMG 5242999)" = "$SRC" ]'
check "the padding reads as zeros" '[ "$(tail -c +5243000 /dev/mapper/evs-$IMG | tr -d "\\000" | wc -c)" = 0 ]'
expect 0 "image show: key_state enabled" evsctl --json image show base
check "json: enabled, cipher, size" 'echo "$out" | tr -d "\n " | grep -q "\"key_state\":\"enabled\",\"backend\":\"local\",\"cipher\":\"aes-xts-plain64\",\"size\":5242999"'
expect 5 "delete refused while attached" evsctl image delete base
check "reason: detach first" 'echo "$err" | grep -q "detach it first"'
expect 0 "detach the image" evsctl volume detach "$IMG"
check "mapping closed" '[ ! -e /dev/mapper/evs-$IMG ]'

echo "# 2. an image from a block device"
head -c 3145728 /dev/urandom | dd of=/dev/vda bs=1M conv=fsync 2>/dev/null
VDA=$(sum /dev/vda)
expect 0 "import /dev/vda (default key)" evsctl --json image import /dev/vda --name fromdisk
out=$(echo "$out" | tr -d '\n ')
IMG2=$(field id) FILE2=$(field path)
check "size is the device's" 'echo "$out" | grep -q "\"size\":67108864"'
check "/dev/vda is unchanged" '[ "$(sum /dev/vda)" = "$VDA" ]'
expect 0 "attach it" evsctl volume attach "$FILE2"
check "the mapping is the disk, byte for byte" '[ "$(blocksize /dev/mapper/evs-$IMG2)" = 67108864 ] && [ "$(sum /dev/mapper/evs-$IMG2)" = "$VDA" ]'
expect 0 "detach it" evsctl volume detach "$IMG2"

echo "# 3. a copy of an image file opens the same (self-describing header)"
cp "$FILE" "$T/copy.img"
expect 0 "attach the copy" evsctl volume attach "$T/copy.img"
check "copy reads back the source" '[ "$(headsum /dev/mapper/evs-$IMG 5242999)" = "$SRC" ]'
expect 0 "detach the copy" evsctl volume detach "$IMG"

echo "# 4. deleting an image leaves its CMK"
expect 0 "delete base" evsctl image delete base
check "file gone" '[ ! -e "$FILE" ]'
expect 0 "img1 still there" evsctl --json key show img1
check "and enabled" 'echo "$out" | tr -d "\n " | grep -q "\"state\":\"enabled\""'

echo "# 5. rewrap an attached volume, then disable the first CMK"
expect 0 "create key rw1" evsctl key create rw1
expect 0 "create key rw2" evsctl key create rw2
expect 0 "create vol-rw on /dev/vdb with rw1" evsctl volume create /dev/vdb --id vol-rw --key rw1
expect 0 "attach vol-rw" evsctl volume attach vol-rw
check "write a pattern" 'dd if=$T/src.raw of=/dev/mapper/evs-vol-rw bs=1M conv=fsync 2>/dev/null'
expect 0 "rewrap vol-rw to rw2 while attached" evsctl --json volume rewrap vol-rw --key rw2
check "now on rw2, still attached" 'echo "$out" | tr -d "\n " | grep -q "\"state\":\"attached\".*\"key_alias\":\"rw2\""'
check "the open mapping still reads the pattern" '[ "$(headsum /dev/mapper/evs-vol-rw 5242999)" = "$SRC" ]'
expect 0 "detach vol-rw" evsctl volume detach vol-rw
expect 0 "disable rw1" evsctl key disable rw1
expect 0 "attach vol-rw with rw1 disabled" evsctl volume attach vol-rw
check "data intact after rewrap" '[ "$(headsum /dev/mapper/evs-vol-rw 5242999)" = "$SRC" ]'
check "one evs-kms token" '[ "$(cryptsetup luksDump /dev/vdb | grep -c ": evs-kms$")" = 1 ]'
expect 0 "detach vol-rw" evsctl volume detach vol-rw

kill "$DPID"; wait "$DPID" 2>/dev/null
if [ "$failed" != 0 ]; then echo "--- daemon log"; cat "$T/daemon.log"; fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
