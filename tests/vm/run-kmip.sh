#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The kmip backend on a real kernel: a PyKMIP server on the host's loopback (tests/integration/kmip-server.sh),
# reached from the guest only through evs-vm --forward; the guest asks the host to stop and start the
# server through --host-command.   run-kmip.sh BUILDDIR [--rekey]
# With --rekey the server is PyKMIP's with the ReKey operation added (pykmip-rekey-server) and the guest runs
# test-kmip-rotation.sh (rotation mapped to ReKey) instead of test-kmip.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(readlink -f "$1")
rekey=${2:-}

if [ -z "${EVS_TEST_KMIP_DIR:-}" ]; then
        # First pass: let kmip-server.sh make the PKI and start the server, then come back here.
        if [ "$rekey" = --rekey ]; then
                exec "$here/../integration/kmip-server.sh" --rekey "$0" "$build" --rekey
        fi
        exec "$here/../integration/kmip-server.sh" "$0" "$build"
fi

dir=$EVS_TEST_KMIP_DIR
ctl="$here/../integration/kmip-server.sh"
guest=$here/test-kmip.sh disks=(--disk 64M:vol-k1 --disk 64M:vol-k2)
if [ "$rekey" = --rekey ]; then
        guest=$here/test-kmip-rotation.sh disks=(--disk 64M:rot-k1 --disk 64M:rot-k2)
fi
exec "$here/evs-vm" run --build "$build" --timeout 900 \
        "${disks[@]}" \
        --forward "5696:$EVS_TEST_KMIP_PORT" \
        --host-command "7:bash $ctl --stop $dir" \
        --host-command "8:bash $ctl --start $dir" \
        --file "$dir/ca.pem:/etc/evs-kmip/ca.pem" \
        --file "$dir/client.pem:/etc/evs-kmip/client.pem" --file "$dir/client.key:/etc/evs-kmip/client.key" \
        --file "$dir/client2.pem:/etc/evs-kmip/client2.pem" --file "$dir/client2.key:/etc/evs-kmip/client2.key" \
        "$guest"
