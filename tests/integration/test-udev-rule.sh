#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# conf/61-evs-cryptd.rules under `udevadm test` (a private mount namespace puts it alone in
# /etc/udev/rules.d) against loop devices: an EVS volume gets EVS_VOLUME_ID=<label>; LUKS2 of
# another subsystem, LUKS1 and a blank disk get nothing.
# Usage: test-udev-rule.sh RULES_FILE     (root; skips with 77 without udevadm/cryptsetup/loop)
set -u
rules=$1
for p in udevadm cryptsetup losetup unshare blkid; do
        command -v "$p" >/dev/null || { echo "SKIP: $p is not installed"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (loop devices)"; exit 77; }
tmp=$(mktemp -d)
loops=()
cleanup() {
        for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null; done
        rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

mkdir "$tmp/rules.d"
cp "$rules" "$tmp/rules.d/"
head -c 32 /dev/urandom >"$tmp/key"

# make_image NAME FORMAT-ARGS... ("" for a blank image)
make_image() {
        local name=$1
        shift
        truncate -s 20M "$tmp/$name.img"
        if [ $# -gt 0 ]; then
                cryptsetup luksFormat -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$tmp/key" "$@" \
                        "$tmp/$name.img" || fail "luksFormat $name"
        fi
}

# props NAME: the udev properties of the image's loop device after our rule.
props() {
        local l
        l=$(losetup -f --show -r "$tmp/$1.img") || { echo "SKIP: cannot set up a loop device"; exit 77; }
        loops+=("$l")
        unshare -m sh -c 'mount --bind "$1" /etc/udev/rules.d && exec udevadm test --action=add "$2"' sh \
                "$tmp/rules.d" "/sys/class/block/${l#/dev/}" >"$tmp/$1.out" 2>&1 || { cat "$tmp/$1.out"; fail "udevadm test $1"; }
        grep -q "Reading rules file: /etc/udev/rules.d/$(basename "$rules")" "$tmp/$1.out" || fail "rule not read for $1"
}

make_image evs --type luks2 --subsystem evs --label vol-0042
make_image other --type luks2 --subsystem other --label vol-0043
make_image luks1 --type luks1
make_image blank

props evs
grep -qx 'EVS_VOLUME_ID=vol-0042' "$tmp/evs.out" || { cat "$tmp/evs.out"; fail "EVS volume not marked"; }
for n in other luks1 blank; do
        props $n
        ! grep -q '^EVS_VOLUME_ID=' "$tmp/$n.out" || fail "$n marked as an EVS volume"
done
grep -qx 'ID_FS_TYPE=crypto_LUKS' "$tmp/other.out" || fail "blkid did not run for 'other' (test is broken)"
echo "ok: $rules"
