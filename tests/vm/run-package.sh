#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The Debian package suite (meson test vm-package): builds the package with
# `dpkg-buildpackage -us -uc -b` from a clean copy of the source tree, checks it with lintian (no
# error, no warning), then boots the system guest with it (tests/vm/run-system.sh --package), where
# tests/vm/test-package.sh installs it with dpkg, runs the system checks against the packaged files
# and purges it.
#
#   tests/vm/run-package.sh BUILD_DIR [EVS-VM-OPTIONS...]
#
# BUILD_DIR's evs-cryptd/evsctl only prepare the disks on the host (as for vm-system); the guest
# runs what the package holds.  EVS_DEB=FILE skips the build and uses that package.
# Exit status: the guest test's; 1 when the package build or lintian failed; 77 when the packaging
# tools are not installed (scripts/deps.sh installs them); 125 when the harness failed.
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(readlink -f "${1:?usage: run-package.sh BUILD_DIR}")
shift

tmp=$(mktemp -d "${TMPDIR:-/tmp}/evs-vm-package.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

deb=${EVS_DEB:-}
if [[ -z $deb ]]; then
        for tool in dpkg-buildpackage:dpkg-dev dh:debhelper lintian:lintian; do
                if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
                        echo "run-package: SKIP: ${tool%%:*} is not installed (package ${tool#*:}; scripts/deps.sh)"
                        exit 77
                fi
        done
        # A copy without build trees or earlier package builds: what the repository holds (and the
        # work tree's uncommitted edits, so a developer tests what they are about to commit).
        mkdir -p "$tmp/src"
        if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
                git -C "$src" ls-files -z -co --exclude-standard | (cd "$src" && tar --null -cf - -T -) | tar -xf - -C "$tmp/src"
        else
                tar -C "$src" --exclude='./build*' --exclude='./obj-*' -cf - . | tar -xf - -C "$tmp/src"
        fi
        t0=$SECONDS
        # nocheck: the unit suite the package build would run is its own meson suite.
        if ! (cd "$tmp/src" && DEB_BUILD_OPTIONS="nocheck parallel=2 ${DEB_BUILD_OPTIONS:-}" \
                dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1; then
                tail -n 40 "$tmp/build.log" | sed 's/^/run-package: build: /'
                echo "run-package: FAIL: dpkg-buildpackage -us -uc -b failed"
                exit 1
        fi
        echo "# dpkg-buildpackage: $((SECONDS - t0)) s"
        deb=$(echo "$tmp"/evs-cryptd_*_*.deb)
        [[ -f $deb ]] || { echo "run-package: FAIL: no evs-cryptd_*.deb built"; exit 1; }
        dpkg-deb -c "$deb" | awk '{ print "#   " $NF }'

        # lintian on everything built (the .changes names the .debs): no errors, no warnings.
        lintian --pedantic --info "$tmp"/evs-cryptd_*.changes >"$tmp/lintian.log" 2>&1 || true
        sed 's/^/# lintian: /' "$tmp/lintian.log"
        if grep -Eq '^[EW]: ' "$tmp/lintian.log"; then
                echo "run-package: FAIL: lintian reports errors or warnings"
                exit 1
        fi
        echo "ok - lintian: no error, no warning"
fi

status=0
"$here/run-system.sh" "$build" --package "$deb" "$@" || status=$?
exit "$status"
