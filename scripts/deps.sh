#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Installs every Debian 12 package the build, the tests and the VM harness need (as root).
set -euo pipefail

PACKAGES=(
        # build
        meson ninja-build pkg-config gcc
        libcryptsetup-dev libdevmapper-dev libssl-dev libsystemd-dev libjson-c-dev libblkid-dev
        libcmocka-dev libp11-kit-dev scdoc bash-completion
        # the fuzz targets under libFuzzer (tests/fuzz) and the valgrind test setup
        clang libclang-rt-14-dev valgrind
        # the Debian package (debian/) and its checks (tests/vm/run-package.sh)
        dpkg-dev debhelper build-essential lintian
        # host integration tests
        cryptsetup-bin e2fsprogs util-linux python3 openssl jq udev systemd libglib2.0-bin
        python3-pykmip softhsm2 opensc p11-kit python3-cryptography
        # evsctl metrics read by a strict OpenMetrics parser (node_exporter itself: fetch_node_exporter below)
        python3-prometheus-client
        # the VM harness (the kernel package itself is fetched and cached by tests/vm/evs-vm)
        qemu-system-x86 busybox-static cpio kmod dmsetup socat
        # its system suite (a cached Debian image with systemd + udev)
        debootstrap
)

# node_exporter, whose textfile collector reads `evsctl metrics --format prometheus` in the integration tests:
# fetched and unpacked into a cache outside the work tree, never installed (its package would start a service
# listening on port 9100 of every address).
TOOLS=${EVS_TOOLS_CACHE:-/var/cache/evs-cryptd-tools}
fetch_node_exporter() {
        local dir=$TOOLS/node-exporter tmp
        [ -x "$dir/usr/bin/prometheus-node-exporter" ] && return 0
        if [ "$(id -u)" != 0 ]; then
                echo "deps: node_exporter is not in $dir (the metrics tests skip it); run as root to fetch it" >&2
                return 0
        fi
        tmp=$(mktemp -d)
        # The package lists may be gone (apt-get clean): fetch them once more when the download fails.
        (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download prometheus-node-exporter >/dev/null 2>&1) ||
                { apt-get update -q >/dev/null && (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download prometheus-node-exporter >/dev/null); } ||
                { rm -rf "$tmp"; echo "deps: apt-get download prometheus-node-exporter failed" >&2; return 1; }
        mkdir -p "$TOOLS"
        rm -rf "$dir" && dpkg-deb -x "$tmp"/prometheus-node-exporter_*.deb "$dir"
        rm -rf "$tmp"
        echo "deps: node_exporter unpacked in $dir"
}

missing=()
for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
        echo "deps: all ${#PACKAGES[@]} packages present"
        fetch_node_exporter
        exit 0
fi
if [ "$(id -u)" != 0 ]; then
        echo "deps: missing packages (${missing[*]}); run as root to install them" >&2
        exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
fetch_node_exporter
