#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The system suite (meson test vm-system): prepares the disks on the host, then boots them with
# `evs-vm system-run` and runs tests/vm/test-system.sh in the guest.
#
#   tests/vm/run-system.sh BUILD_DIR [--package DEB] [EVS-VM-OPTIONS...]
#
# With --package DEB (tests/vm/run-package.sh) nothing is installed from BUILD_DIR: the guest runs
# tests/vm/test-package.sh, which installs DEB with dpkg, runs test-system.sh against the packaged
# files and purges it.
#
# EVS volumes are formatted on the host, where no device-mapper is needed: the daemon of
# BUILD_DIR runs with a temporary state directory and bus, creates two CMKs in the local KMS and
# formats two image files with them.  Its root key and keys/ then become the guest's
# /var/lib/evs-cryptd, so the guest's evs-cryptd knows the CMKs.  Volume records are not copied:
# the guest finds the volumes on its disks.
# Extra arguments go to `evs-vm system-run` (e.g. --verbose).
# Exit status: the guest test's; 125 when the preparation or the harness failed.
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
build=$(readlink -f "${1:?usage: run-system.sh BUILD_DIR}")
shift
script=$here/test-system.sh
vm_args=()
if [[ ${1:-} == --package ]]; then
        deb=$(readlink -f "${2:?run-system: --package needs a .deb}")
        shift 2
        script=$here/test-package.sh
        vm_args=(--no-install --file "$deb:/root/debs/" --file "$here/test-system.sh:/usr/lib/evs-vm/test-system")
fi
daemon=$build/src/daemon/evs-cryptd
evsctl=$build/src/evsctl/evsctl
[[ -x $daemon && -x $evsctl ]] || { echo "run-system: no evs-cryptd/evsctl in $build" >&2; exit 125; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/evs-vm-system.XXXXXX")
dpid=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
        if [[ -n $dpid ]]; then
                kill "$dpid" 2>/dev/null || true
                wait "$dpid" 2>/dev/null || true
        fi
        rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/conf" <<EOF
[Daemon]
StateDirectory=$tmp/state
BusPath=$tmp/bus
EOF
truncate -s 64M "$tmp/vol-cold.img" "$tmp/vol-hot.img"
truncate -s 16M "$tmp/blank.img"

"$daemon" --config "$tmp/conf" >"$tmp/daemon.log" 2>&1 &
dpid=$!
export EVS_BUS=$tmp/bus
for _ in $(seq 100); do
        "$evsctl" status >/dev/null 2>&1 && break
        sleep 0.1
done
prep() {
        if ! "$@" >>"$tmp/prep.log" 2>&1; then
                echo "run-system: host preparation failed: $*" >&2
                cat "$tmp/prep.log" "$tmp/daemon.log" >&2
                exit 125
        fi
}
prep "$evsctl" key create coldkey --description "system suite: boot disk"
prep "$evsctl" key create hotkey --description "system suite: hot-plugged disk"
prep "$evsctl" volume create "$tmp/vol-cold.img" --id vol-cold --key coldkey
prep "$evsctl" volume create "$tmp/vol-hot.img" --id vol-hot --key hotkey
# The system suite only (not the package's run of it): 20 volumes that the guest hot-plugs at once.
storm_disks=() storm_serials=()
if [[ $script == "$here/test-system.sh" ]]; then
        prep "$evsctl" key create plugkey --description "system suite: 20 disks at once"
        for i in $(seq -w 0 19); do
                truncate -s 17M "$tmp/hp-$i.img"
                prep "$evsctl" volume create "$tmp/hp-$i.img" --id "hp-$i" --key plugkey
                storm_disks+=(--disk-file "$tmp/hp-$i.img:hp-$i:hotplug")
                storm_serials+=("hp-$i")
        done
        # Issue 11, beside systemd-cryptsetup: two volumes opened at boot from /etc/crypttab through the
        # token plugin, one of them on a disabled CMK.
        truncate -s 64M "$tmp/vol-tab.img" "$tmp/vol-tabx.img"
        prep "$evsctl" key create tabkey --description "system suite: crypttab"
        prep "$evsctl" key create tabxkey --description "system suite: crypttab, disabled"
        prep "$evsctl" volume create "$tmp/vol-tab.img" --id vol-tab --key tabkey
        prep "$evsctl" volume create "$tmp/vol-tabx.img" --id vol-tabx --key tabxkey
        prep "$evsctl" key disable tabxkey
        printf '%s\n' 'data-tab  /dev/disk/by-id/virtio-vol-tab   none  luks,headless' \
                'data-tabx /dev/disk/by-id/virtio-vol-tabx  none  luks,headless,nofail' >"$tmp/crypttab"
        storm_disks+=(--disk-file "$tmp/vol-tab.img:vol-tab" --disk-file "$tmp/vol-tabx.img:vol-tabx"
                --file "$tmp/crypttab:/etc/crypttab")
fi
kill "$dpid"
wait "$dpid" 2>/dev/null || true
dpid=

mkdir -p "$tmp/guest-state"
chmod 0700 "$tmp/guest-state"
cp -a "$tmp/state/root.key" "$tmp/state/keys" "$tmp/guest-state/"

status=0
"$here/evs-vm" system-run --build "$build" \
        --disk-file "$tmp/vol-cold.img:vol-cold" \
        --disk-file "$tmp/vol-hot.img:vol-hot:hotplug" \
        --disk-file "$tmp/blank.img:blank:hotplug" \
        "${storm_disks[@]}" \
        --file "$tmp/guest-state:/var/lib/evs-cryptd" \
        "${vm_args[@]}" "$@" "$script" "${storm_serials[@]}" || status=$?
exit "$status"
