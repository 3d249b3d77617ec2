#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs a test binary against a SoftHSM2 token of its own: a temp dir with a softhsm2.conf, a
# token initialised with a known label and PIN, and the PIN in a 0400 file.
# Usage: softhsm-env.sh TEST-BINARY [ARGS...]
# Exports SOFTHSM2_CONF, EVS_TEST_P11_MODULE, EVS_TEST_P11_TOKEN, EVS_TEST_P11_PINFILE,
# EVS_TEST_P11_DIR. Exit 77 (skip) only when SoftHSM2 is not installed.
set -eu

module=${EVS_TEST_P11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -e "$module" ]; then
        echo "SKIP: softhsm2-util or $module not installed (Debian package softhsm2)" >&2
        exit 77
fi

dir=$(mktemp -d /tmp/evs-softhsm.XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/tokens"
cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$dir/softhsm2.conf"

pin=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
softhsm2-util --init-token --free --label evs-test --pin "$pin" --so-pin "so-$pin" >/dev/null
# A second token, so label selection is really exercised.
softhsm2-util --init-token --free --label evs-other --pin "$pin" --so-pin "so-$pin" >/dev/null
(umask 0377 && printf '%s\n' "$pin" >"$dir/pin")

export EVS_TEST_P11_MODULE="$module"
export EVS_TEST_P11_TOKEN=evs-test
export EVS_TEST_P11_PINFILE="$dir/pin"
export EVS_TEST_P11_DIR="$dir"

rc=0
${EVS_VALGRIND_WRAPPER:-} "$@" || rc=$? # under valgrind with `meson test --setup valgrind`
exit $rc
