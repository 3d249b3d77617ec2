#!/bin/bash
# evs-vm-ctl (installed in the guest of `evs-vm system-run`): ask the host to
# plug or unplug a disk registered with --disk-file PATH:SERIAL:hotplug.
#
#   evs-vm-ctl plug SERIAL...     QMP blockdev-add + device_add (virtio-blk-pci) of
#                                 each, back to back (the disks appear at once)
#   evs-vm-ctl unplug SERIAL...   QMP device_del, returns once qemu removed them
#
# Exit status 0 when the host answered "ok", 1 with its error otherwise.
set -u
port=/dev/virtio-ports/evs.ctl
case ${1:-} in
plug | unplug) [[ $# -ge 2 ]] || { echo "usage: evs-vm-ctl plug|unplug SERIAL..." >&2; exit 2; } ;;
*) echo "usage: evs-vm-ctl plug|unplug SERIAL..." >&2; exit 2 ;;
esac
i=0
until [[ -c $port ]]; do
    ((i++ < 300)) || { echo "evs-vm-ctl: no $port" >&2; exit 1; }
    sleep 0.1
done
exec 3<>"$port" || exit 1
printf '%s\n' "$*" >&3
if ! IFS= read -r -t 300 reply <&3; then
    echo "evs-vm-ctl: no answer from the host" >&2
    exit 1
fi
reply=${reply%$'\r'}
[[ $reply == ok ]] && exit 0
echo "evs-vm-ctl: $*: ${reply#error }" >&2
exit 1
