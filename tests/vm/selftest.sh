#!/bin/sh
# Guest-side self test of the VM harness (runs under busybox sh in the VM):
# real dm-crypt on a virtio disk, end to end.
#
#   tests/vm/evs-vm run --disk 64M:vol-self tests/vm/selftest.sh [OPTIONS]
#
# Options:
#   --serial S     serial expected on /dev/vda (default vol-self)
#   --exit N       exit with N once every check passed (proves the harness
#                  carries the status out; default 0)
#   --echo ARG     print "selftest: arg=[ARG]" (proves argument quoting)
#   --more-disks "S1 S2..."  expect /dev/vdb, vdc... with these serials
#   --expect-file PATH       expect PATH to exist (a --file copy)
set -eu
# shellcheck disable=SC3040  # busybox sh has pipefail
set -o pipefail

fail() {
    echo "selftest: FAIL: $*" >&2
    exit 1
}
step() { echo "selftest: $*"; }

serial=vol-self status=0 more_disks='' files=''
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || fail "$1 needs a value"
    case $1 in
    --serial) serial=$2 ;;
    --exit) status=$2 ;;
    --echo) printf 'selftest: arg=[%s]\n' "$2" ;;
    --more-disks) more_disks=$2 ;;
    --expect-file) files="$files $2" ;;
    *) fail "unknown argument $1" ;;
    esac
    shift 2
done

[ "${EVS_IN_VM:-}" = 1 ] || fail "EVS_IN_VM is not 1 (run me through tests/vm/evs-vm)"
[ "$(id -u)" = 0 ] || fail "not root"
[ "$(pwd)" = /root ] || fail "cwd is $(pwd), not /root"

step "kernel $(uname -r), hostname $(hostname)"
[ -c /dev/mapper/control ] || fail "/dev/mapper/control missing"
[ -b /dev/vda ] || fail "/dev/vda missing"

got=$(cat /sys/block/vda/serial)
[ "$got" = "$serial" ] || fail "/sys/block/vda/serial is '$got', want '$serial'"
[ "$(readlink -f "/dev/disk/by-id/virtio-$serial")" = /dev/vda ] \
    || fail "/dev/disk/by-id/virtio-$serial does not point at /dev/vda"
step "disk /dev/vda serial $got, $(($(cat /sys/block/vda/size) / 2048)) MiB"

letters=bcdefghijklmnopqrstuvwxyz i=0
for want in $more_disks; do
    dev=vd$(echo "$letters" | cut -c$((i + 1)))
    got=$(cat "/sys/block/$dev/serial" 2>/dev/null) || fail "/dev/$dev missing"
    [ "$got" = "$want" ] || fail "/dev/$dev serial is '$got', want '$want'"
    step "disk /dev/$dev serial $got"
    i=$((i + 1))
done
for f in $files; do
    [ -e "$f" ] || fail "$f missing"
    step "file $f present"
done

printf 'evs selftest passphrase' >/tmp/pass
step "luksFormat"
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 --key-file /tmp/pass /dev/vda
cryptsetup isLuks /dev/vda || fail "isLuks after luksFormat"

step "open"
cryptsetup open --key-file /tmp/pass /dev/vda selftest
[ -b /dev/mapper/selftest ] || fail "/dev/mapper/selftest missing after open"
dmsetup table selftest | grep -q ' crypt ' || fail "selftest is not a crypt target"
step "cipher $(cryptsetup status selftest | sed -n 's/^[[:space:]]*cipher: *//p')"

step "write 8 MiB, read back"
dd if=/dev/urandom of=/tmp/data bs=1M count=8 2>/dev/null
want=$(sha256sum </tmp/data)
dd if=/tmp/data of=/dev/mapper/selftest bs=1M conv=fsync 2>/dev/null
echo 3 >/proc/sys/vm/drop_caches
got=$(dd if=/dev/mapper/selftest bs=1M count=8 iflag=direct 2>/dev/null | sha256sum)
[ "$got" = "$want" ] || fail "read back $got, wrote $want"

# The ciphertext on the raw disk must not be the plaintext.
offset=$(cryptsetup luksDump /dev/vda | sed -n 's/^[[:space:]]*offset: *\([0-9]*\) \[bytes\].*/\1/p' | head -n1)
[ -n "$offset" ] || fail "no data segment offset in luksDump"
raw=$(dd if=/dev/vda bs=1M skip=$((offset / 1048576)) count=8 iflag=direct 2>/dev/null | sha256sum)
[ "$raw" != "$want" ] || fail "plaintext found on the raw disk"

# A filesystem on the mapping: ext4 is loaded on demand by the kernel.
if command -v mkfs.ext4 >/dev/null; then
    step "mkfs.ext4 + mount (ext4 module loaded on demand)"
    mkfs.ext4 -q -F /dev/mapper/selftest
    mkdir -p /mnt/selftest
    mount -t ext4 /dev/mapper/selftest /mnt/selftest
    echo hello >/mnt/selftest/file
    umount /mnt/selftest
    mount -t ext4 -o ro /dev/mapper/selftest /mnt/selftest
    [ "$(cat /mnt/selftest/file)" = hello ] || fail "file lost across remount"
    umount /mnt/selftest
fi

step "close"
cryptsetup close selftest
[ ! -e /dev/mapper/selftest ] || fail "/dev/mapper/selftest still there after close"

step "all checks passed, exiting with $status"
exit "$status"
