#!/bin/sh
# /init of the evs-vm guest: PID 1, run by busybox ash from the initramfs.
#
# Sets up a minimal system (devtmpfs, proc, sys, tmpfs on /run and /tmp,
# kernel modules, block devices, /dev/mapper/control), runs the test script
# given to tests/vm/evs-vm, prints
#     EVS-VM-START:<token>          (host: test output starts after this line)
#     EVS-VM-EXIT:<token>:<status>  (host: the script's exit status)
# on the serial console and powers the machine off.  <token> is random per
# run, so nothing the script prints can fake the marker.
#
# Files written by the host into the initramfs:
#   /etc/evs-vm/config        shell assignments (EVS_VM_TOKEN, ...)
#   /etc/evs-vm/args          `set -- ...` line with the script's arguments
#   /etc/evs-vm/modules.load  modules to insmod, in dependency order

export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# If anything below goes badly wrong, still power off instead of letting the
# kernel panic on PID 1 exiting (the host then reports a missing marker).
trap 'poweroff -f' EXIT

mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
# The kernel's messages would interleave with the test output on the same
# serial line: from now on only emergencies (panics, oopses) reach it.
# `dmesg` in the guest still has everything.
echo "1 4 1 7" >/proc/sys/kernel/printk
mkdir -p /run/cryptsetup /run/lock /var/lib /var/tmp /root

# shellcheck source=/dev/null
. /etc/evs-vm/config

hostname "${EVS_VM_HOSTNAME:-evs-vm}"
ip link set lo up 2>/dev/null || true

# Modules: the host resolved the dependency closure and its order.
while read -r mod; do
    [ -n "$mod" ] || continue
    if ! out=$(insmod "$mod" 2>&1); then
        case $out in
        *"File exists"*) ;;
        *) echo "evs-vm init: warning: insmod $mod: $out" ;;
        esac
    fi
done </etc/evs-vm/modules.load

# Block devices: virtio_blk probes synchronously, but give slow TCG hosts a
# few seconds before complaining.
i=0
while :; do
    n=0
    for d in /sys/block/vd*; do
        [ -e "$d" ] && n=$((n + 1))
    done
    [ "$n" -ge "${EVS_VM_NDISKS:-0}" ] && break
    i=$((i + 1))
    if [ "$i" -ge 100 ]; then
        echo "evs-vm init: warning: expected ${EVS_VM_NDISKS} disks, found $n"
        break
    fi
    sleep 0.1
done

# What udev would give: /dev/disk/by-id/virtio-<serial> -> ../../vdX.
mkdir -p /dev/disk/by-id
for d in /sys/block/vd*; do
    [ -e "$d/serial" ] || continue
    serial=$(cat "$d/serial")
    [ -n "$serial" ] && ln -sf "../../${d##*/}" "/dev/disk/by-id/virtio-$serial"
done

# devtmpfs creates /dev/mapper/control when dm-mod registers; make sure.
if [ ! -c /dev/mapper/control ] && [ -d /sys/module/dm_mod ]; then
    dmsetup mknodes >/dev/null 2>&1 || true
fi

# No udev in this guest: libdevmapper must create /dev/mapper nodes itself
# and not wait for udev cookies.
export DM_DISABLE_UDEV=1
export EVS_IN_VM=1 HOME=/root TERM="${TERM:-linux}" LANG=C.UTF-8
cd /root || exit 1

rc=0
echo "EVS-VM-START:${EVS_VM_TOKEN}"
if [ -n "${EVS_VM_SCRIPT:-}" ]; then
    mkdir -p /run/evs-sanitizer
    # shellcheck source=/dev/null
    . /etc/evs-vm/args
    if [ "${EVS_VM_SHELL:-0}" = 1 ]; then
        "$EVS_VM_SCRIPT" "$@"
    else
        "$EVS_VM_SCRIPT" "$@" </dev/null
    fi
    rc=$?
    # Reports of a sanitizer build (evs-vm forwards ASAN_OPTIONS... with a log_path here) fail the run.
    if [ -n "$(ls /run/evs-sanitizer 2>/dev/null)" ]; then
        cat /run/evs-sanitizer/*
        echo "evs-vm: sanitizer reports above, from $(ls /run/evs-sanitizer | wc -l) process(es): the run fails"
        [ "$rc" != 0 ] || rc=1
    fi
fi
if [ "${EVS_VM_SHELL:-0}" = 1 ]; then
    [ -n "${EVS_VM_SCRIPT:-}" ] && echo "evs-vm: script exited with status $rc"
    echo "evs-vm: interactive shell; exit it (or Ctrl-D) to power off"
    # cttyhack gives the shell a controlling tty, so Ctrl-C works.
    setsid cttyhack sh -l
fi
sync
echo "EVS-VM-EXIT:${EVS_VM_TOKEN}:$rc"
poweroff -f
