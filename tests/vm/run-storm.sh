#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The vm storm test (meson test vm-storm): 50 volumes on the exec test helper, formatted on the host by
# prepare-volumes.sh (a LUKS2 format costs ~2 s under TCG), then tests/vm/test-storm.sh in one boot of evs-vm.
#
#   tests/vm/run-storm.sh BUILD_DIR [evs-vm run options]
# Exit status: the guest test's; 125 when the preparation or the harness failed.
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
build=$(readlink -f "${1:?usage: run-storm.sh BUILD_DIR}")
shift
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/evs-vm-storm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$here/prepare-volumes.sh" "$build" "$tmp" exec:st:50:stormkey || exit 125
export EVS_VM_EXTRA_BINS="$build/tests/helpers/evs-kms-test-helper $build/tests/helpers/evs-bench-run ${EVS_VM_EXTRA_BINS:-}"
status=0
"$here/evs-vm" run --build "$build" --disk-file "$tmp/volumes.img:storm" \
        --file "$tmp/state:/var/lib/evs-cryptd" --file "$tmp/kms:/var/lib/evs-storm-kms" \
        "$@" "$here/test-storm.sh" || status=$?
exit "$status"
