#!/bin/sh
# /init of the initramfs of `evs-vm system-run` (busybox ash, PID 1 until the
# switch_root).  Loads the virtio and ext4 modules, mounts the guest's root
# file system (/dev/vda, the cached Debian image), copies this run's files
# (/overlay: the project's `meson install` tree, kernel modules, the test
# and its unit) onto it and hands over to systemd.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin

fail() {
    echo "evs-vm system-init: $*"
    # No exit marker: the host reports the missing status and the console.
    poweroff -f
}

mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys

while read -r mod; do
    [ -n "$mod" ] || continue
    if ! out=$(insmod "$mod" 2>&1); then
        case $out in
        *"File exists"*) ;;
        *) echo "evs-vm system-init: warning: insmod $mod: $out" ;;
        esac
    fi
done </etc/evs-vm/modules.load
modprobe ext4 || fail "cannot load ext4"

i=0
until [ -b /dev/vda ]; do
    i=$((i + 1))
    [ "$i" -lt 100 ] || fail "no /dev/vda (the root image)"
    sleep 0.1
done

mkdir -p /newroot
mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "cannot mount /dev/vda"
# busybox cp -a: modes, owners and symlinks as staged on the host.
cp -a /overlay/. /newroot/ || fail "cannot copy the run's files onto the root"

umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /lib/systemd/systemd
