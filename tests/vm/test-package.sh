#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The Debian package suite in the guest (run by tests/vm/run-package.sh through run-system.sh
# --package): the system guest of test-system.sh without `meson install`; the built package is in
# /root/debs. Installs it with dpkg, runs the system checks (/usr/lib/evs-vm/test-system: socket
# activation, udev attach, the unit's sandbox) against the packaged files, then purges it and checks
# that nothing is left behind but the state directory with the local KMS's keys (README.Debian).
# shellcheck disable=SC2016  # check evaluates its condition strings later: single quotes on purpose.
set -u

T=/tmp/evs-package
mkdir -p "$T"
. /usr/lib/evs-tests/tap.sh
prop() { systemctl show -P "$2" "$1"; }

# Every file, directory and symlink outside the volatile trees, to compare before and after.
snapshot() {
        find /etc /usr /var -xdev \( -path /var/log -o -path /var/cache -o -path /var/tmp -o -path /var/lib/dpkg \
                -o -path /var/lib/apt -o -path /var/lib/systemd -o -path /etc/ld.so.cache -o -path /var/lib/evs-cryptd \) \
                -prune -o -print | sort
}

deb=$(echo /root/debs/evs-cryptd_*.deb)
echo "# 0. before: $deb"
check "the package file is there" '[ -f "$deb" ]'
check "nothing of evs-cryptd installed" '[ ! -e /usr/sbin/evs-cryptd ] && [ ! -e /lib/systemd/system/evs-cryptd.service ] && ! dpkg -s evs-cryptd >/dev/null 2>&1'
snapshot >"$T/before"
systemctl list-unit-files --no-legend >"$T/units-before"

echo "# 1. dpkg -i"
expect 0 "dpkg -i $(basename "$deb")" env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"
echo "$out" | sed 's/^/#   /'
check "installed" '[ "$(dpkg-query -W -f="\${Status}" evs-cryptd)" = "install ok installed" ]'
check "every dependency satisfied (dpkg --audit is silent)" '[ -z "$(dpkg --audit)" ]'
check "evs-cryptd.socket enabled and listening (dh_installsystemd)" '[ "$(systemctl is-enabled evs-cryptd.socket)" = enabled ] && [ "$(prop evs-cryptd.socket ActiveState)/$(prop evs-cryptd.socket SubState)" = active/listening ]'
check "evs-cryptd.service not enabled, not started" '[ "$(systemctl is-enabled evs-cryptd.service)" = disabled ] && [ "$(prop evs-cryptd.service ActiveState)" = inactive ]'
check "the metrics timer installed, not enabled, not started" '[ -f /lib/systemd/system/evs-cryptd-metrics.service ] && [ "$(systemctl is-enabled evs-cryptd-metrics.timer)" = disabled ] && [ "$(prop evs-cryptd-metrics.timer ActiveState)" = inactive ]'
check "the configuration is a conffile" 'dpkg-query -W -f="\${Conffiles}" evs-cryptd | grep -q "/etc/evs-cryptd/evs-cryptd.conf "'
check "the token plugin is in libcryptsetup's directory" '[ -f /usr/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-evs-kms.so ]'
check "the journal catalog is installed and indexed (systemd's dpkg trigger)" '[ -f /usr/lib/systemd/catalog/evs-cryptd.catalog ] && journalctl --list-catalog | grep -q "^dc7f4e099cd84e59a063ff0e2c88110c "'
check "man pages and completion" '[ -f /usr/share/man/man8/evsctl.8.gz ] && [ -f /usr/share/man/man8/evs-cryptd.8.gz ] && [ -f /usr/share/bash-completion/completions/evsctl ]'
check "the helpers' interpreter came as a dependency" '[ "$(head -n 1 /usr/libexec/evs-cryptd/evs-kms-vault)" = "#!/usr/bin/python3" ] && [ -x /usr/bin/python3 ]'
check "postinst re-probed the boot disk: EVS_VOLUME_ID=vol-cold" 'udevadm settle -t 30; udevadm info --query=property /dev/disk/by-id/virtio-vol-cold | grep -qx EVS_VOLUME_ID=vol-cold'

echo "# 2. the system checks against the packaged files"
/usr/lib/evs-vm/test-system 2>&1 | tee "$T/system.out" | sed 's/^/  /'
sys_status=${PIPESTATUS[0]}
check "test-system passed: $(tail -n 1 "$T/system.out")" '[ "$sys_status" = 0 ]'

echo "# 3. dpkg --purge"
expect 0 "dpkg --purge evs-cryptd" dpkg --purge evs-cryptd
echo "$err" | sed 's/^/#   /'
check "not installed any more" '! dpkg-query -W -f="\${Status}" evs-cryptd 2>/dev/null | grep -q installed'
check "the service and the socket are stopped" '[ "$(prop evs-cryptd.service ActiveState)" = inactive ] && [ "$(prop evs-cryptd.socket ActiveState)" = inactive ]'
check "no unit file left, no enablement symlink" '! systemctl list-unit-files --no-legend | grep -q evs-cryptd && [ -z "$(find /etc/systemd -name "evs-cryptd*")" ]'
check "deb-systemd-helper forgot the units" '[ -z "$(find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name "*evs-cryptd*" 2>/dev/null)" ]'
check "/etc/evs-cryptd is gone (conffiles purged)" '[ ! -e /etc/evs-cryptd ]'
check "/run/evs-cryptd is gone" '[ ! -e /run/evs-cryptd ]'
snapshot >"$T/after"
left=$(comm -13 "$T/before" "$T/after")
gone=$(comm -23 "$T/before" "$T/after")
check "no file left behind: ${left:-none}" '[ -z "$left" ]'
check "nothing the package did not own removed: ${gone:-none}" '[ -z "$gone" ]'
check "the local KMS's keys are kept (README.Debian)" '[ -f /var/lib/evs-cryptd/root.key ] && [ -n "$(ls -A /var/lib/evs-cryptd/keys)" ]'
check "the purge said why it kept them" 'echo "$err" | grep -q "keeping /var/lib/evs-cryptd"'
check "the open mapping stays: kernel state, not the package's" 'dmsetup info evs-vol-cold >/dev/null 2>&1'

tap_done
