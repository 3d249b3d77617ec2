#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The README's first command: build evs-cryptd and walk through its main job on the embedded local KMS.
# Where the host kernel lacks device-mapper, the same walkthrough runs inside a throwaway VM.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
BUILD=${EVS_BUILD:-build}
[ -d "$BUILD" ] || meson setup "$BUILD"
ninja -C "$BUILD"

if [ -c /dev/mapper/control ] && dmsetup version >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "device-mapper is available: running on this host with two loop devices."
        tmp=$(mktemp -d)
        trap 'losetup -d "$l1" "$l2" 2>/dev/null; rm -rf "$tmp"' EXIT
        truncate -s 64M "$tmp/d1" "$tmp/d2"
        l1=$(losetup --show -f "$tmp/d1"); l2=$(losetup --show -f "$tmp/d2")
        PATH=$PWD/$BUILD/src/daemon:$PWD/$BUILD/src/evsctl:$PATH sh scripts/walkthrough-steps.sh "$l1" "$l2"
else
        echo "This kernel has no device-mapper: running the walkthrough in a VM (tests/vm/evs-vm)."
        tests/vm/evs-vm run --build "$BUILD" --disk 64M:vol-finance --disk 64M:vol-shared \
                scripts/walkthrough-steps.sh /dev/vda /dev/vdb
fi
