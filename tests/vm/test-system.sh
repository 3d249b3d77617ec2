#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The system suite, in one boot of `evs-vm system-run` (run by tests/vm/run-system.sh): evs-cryptd
# installed with `meson install` into a Debian 12 guest with systemd as PID 1 and udev, run as
# the real evs-cryptd.service/.socket with their sandbox.
# Disks (prepared on the host, serial = volume id):
#   vol-cold  at boot      EVS volume on CMK "coldkey"
#   vol-hot   hot-plug     EVS volume on CMK "hotkey"   (evs-vm-ctl plug|unplug vol-hot)
#   blank     hot-plug     zeros, never formatted
#   hp-00..   hot-plug     EVS volumes on CMK "plugkey", the script's arguments (vm-system only): plugged at once
#   vol-tab   at boot      EVS volume on CMK "tabkey", in /etc/crypttab as data-tab (vm-system only)
#   vol-tabx  at boot      EVS volume on CMK "tabxkey" (disabled), in /etc/crypttab as data-tabx, nofail (vm-system only)
# /var/lib/evs-cryptd holds the host's root key and CMKs.
# check/wait_for evaluate their condition strings later: single quotes on purpose.
# shellcheck disable=SC2016,SC2034
set -u

T=/tmp/evs
mkdir -p "$T"
MID_ATTACHED=bf993f3e5c75475f81c6f193bdaf2ae6
MID_DETACHED=0609ac1c0f654fdd8137e34936cb824b
MID_REFUSED=dc7f4e099cd84e59a063ff0e2c88110c

. /usr/lib/evs-tests/tap.sh
# wait_for SECONDS CONDITION: poll every 0.1 s (plus the time CONDITION takes) until SECONDS.
wait_for() {
        local end=$((SECONDS + $1))
        until eval "$2"; do
                [ "$SECONDS" -lt "$end" ] || return 1
                sleep 0.1
        done
}
prop() { systemctl show -P "$2" "$1"; }
state() { echo "$(prop "$1" ActiveState)/$(prop "$1" SubState)"; }
# journal entries of the daemon since the start of this boot, all fields
jv() { journalctl -b -q --no-pager -o verbose "$@"; }
# sum DEV [MIB] / put DEV [MIB]: sha256 of / write the 4 MiB pattern at MIB (block devices only:
# dd would happily create a regular file in /dev/mapper).
sum() { [ -b "$1" ] && dd if="$1" bs=1M count=4 skip="${2:-0}" iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1; }
put() { [ -b "$1" ] && dd if="$T/pattern" of="$1" bs=1M seek="${2:-0}" oflag=direct conv=fsync 2>/dev/null; }
# refusals VOLID: how many attach refusals of VOLID the journal holds.
refusals() { jv MESSAGE_ID=$MID_REFUSED EVS_VOLUME_ID="$1" | grep -c "^ *EVS_RESULT=refused$"; }

head -c 4194304 /dev/urandom >"$T/pattern"
PAT=$(sha256sum "$T/pattern" | cut -d' ' -f1)

echo "# 0. the guest and the installed files"
check "systemd is PID 1" '[ "$(cat /proc/1/comm)" = systemd ]'
check "systemd-udevd is running" 'systemctl is-active -q systemd-udevd'
udevadm settle -t 30
check "unit, socket, udev rule, tmpfiles, binaries installed" '[ -f /lib/systemd/system/evs-cryptd.service ] && [ -f /lib/systemd/system/evs-cryptd.socket ] && [ -f /lib/udev/rules.d/61-evs-cryptd.rules ] && [ -f /usr/lib/tmpfiles.d/evs-cryptd.conf ] && [ -x /usr/sbin/evs-cryptd ] && [ -x /usr/sbin/evsctl ]'
check "the configuration is valid" 'evs-cryptd --check-config >/dev/null'
check "evs-cryptd is not running yet" '[ "$(prop evs-cryptd.service ActiveState)" = inactive ]'
check "udev marked the boot disk: EVS_VOLUME_ID=vol-cold" 'udevadm info --query=property /dev/disk/by-id/virtio-vol-cold | grep -qx EVS_VOLUME_ID=vol-cold'
check "no mapping before the service starts" '[ ! -e /dev/mapper/evs-vol-cold ]'

echo "# 1. systemctl start evs-cryptd: READY and STATUS"
expect 0 "systemctl start evs-cryptd" systemctl start evs-cryptd
check "active/running (Type=notify: start returned after READY=1)" '[ "$(state evs-cryptd.service)" = active/running ]'
check "the socket unit came up with it (Requires=)" '[ "$(state evs-cryptd.socket)" = active/running ]'
check "StatusText is the daemon's STATUS=" 'prop evs-cryptd.service StatusText | grep -q "^Serving [0-9]* attached volume(s), [0-9]* request(s) in progress; KMS: local [0-9]* in flight, [0-9]* queued\.$"'
out=$(systemctl status evs-cryptd --no-pager 2>&1)
check "systemctl status shows the STATUS line: $(echo "$out" | grep -m1 "Status:")" 'echo "$out" | grep -q "Status: \"Serving [0-9]* attached volume(s)"'
BUS_INODE=$(stat -c %i /run/evs-cryptd/bus 2>/dev/null)
check "the daemon listens on the socket systemd passed it (fd 3)" 'readlink /proc/$(prop evs-cryptd.service MainPID)/fd/3 | grep -q "^socket:"'
check "evsctl status answers" 'evsctl status >/dev/null'

echo "# 1b. evs-cryptd-metrics: the daemon's metrics for node_exporter's textfile collector"
PROM=/var/lib/prometheus/node-exporter
check "the metrics timer and service are installed, the timer not enabled" '[ -f /lib/systemd/system/evs-cryptd-metrics.timer ] && [ -f /lib/systemd/system/evs-cryptd-metrics.service ] && [ "$(systemctl is-enabled evs-cryptd-metrics.timer 2>/dev/null)" = disabled ]'
PROM_MADE=
[ -d /var/lib/prometheus ] || PROM_MADE=1 # made by this test: removed after section 6 (test-package looks for leftovers)
mkdir -p "$PROM"
expect 0 "systemctl start evs-cryptd-metrics.service" systemctl start evs-cryptd-metrics.service
check "it wrote $PROM/evs-cryptd.prom, mode 644, in the Prometheus text format" '[ "$(stat -c %a "$PROM/evs-cryptd.prom")" = 644 ] && grep -qx "# TYPE evs_kms_requests_total counter" "$PROM/evs-cryptd.prom" && ! grep -q "^# EOF" "$PROM/evs-cryptd.prom"'
check "and nothing else there (no temporary file left)" '[ "$(ls -A "$PROM")" = evs-cryptd.prom ]'
expect 0 "systemctl start evs-cryptd-metrics.timer" systemctl start evs-cryptd-metrics.timer
# active/waiting, or active/running when the minute turned since the start and the service runs now
check "the timer is active, its next elapse set: $(state evs-cryptd-metrics.timer), $(prop evs-cryptd-metrics.timer NextElapseUSecRealtime)" 'case $(state evs-cryptd-metrics.timer) in active/waiting | active/running) [ -n "$(prop evs-cryptd-metrics.timer NextElapseUSecRealtime)" ] ;; *) false ;; esac'
expect 0 "systemctl stop evs-cryptd-metrics.timer" systemctl stop evs-cryptd-metrics.timer

echo "# 4. coldplug: the volume present at boot is attached once the service starts"
check "/dev/mapper/evs-vol-cold exists" 'wait_for 30 "[ -b /dev/mapper/evs-vol-cold ]"'
check "journal: attached (MESSAGE_ID $MID_ATTACHED)" 'jv MESSAGE_ID=$MID_ATTACHED EVS_VOLUME_ID=vol-cold | grep -q "EVS_KEY_ALIAS=coldkey"'
expect 0 "evsctl volume list" evsctl volume list
check "listed as attached" 'echo "$out" | grep "^vol-cold " | grep -q attached'
check "vol-cold takes writes" 'put /dev/mapper/evs-vol-cold'
check "and reads them back" '[ "$(sum /dev/mapper/evs-vol-cold)" = "$PAT" ]'

TAB=0
if [ -e /dev/disk/by-id/virtio-vol-tab ]; then
        TAB=1
        echo "# 4b. crypttab: systemd-cryptsetup opened vol-tab at boot through the token plugin, no daemon"
        U_TAB='systemd-cryptsetup@data\x2dtab.service' U_TABX='systemd-cryptsetup@data\x2dtabx.service'
        # ureason UNIT VOLID: the plugin's refusal in the unit's journal
        ureason() { journalctl -b -q --no-pager -u "$1" -o cat | grep -q "evs-kms: cannot unlock volume $2: key .* is disabled"; }
        check "the generator made both units from /etc/crypttab" '[ -f "/run/systemd/generator/$U_TAB" ] && [ -f "/run/systemd/generator/$U_TABX" ]'
        check "$U_TAB is active" '[ "$(state "$U_TAB")" = active/exited ]'
        check "/dev/mapper/data-tab is open on vol-tab" '[ -b /dev/mapper/data-tab ] && cryptsetup status data-tab | grep -q "device: *$(readlink -f /dev/disk/by-id/virtio-vol-tab)"'
        check "it holds the volume's LUKS UUID in its dm UUID" '[ "$(dmsetup info -c --noheadings -o uuid data-tab)" = "CRYPT-LUKS2-$(cryptsetup luksUUID /dev/disk/by-id/virtio-vol-tab | tr -d -)-data-tab" ]'
        check "vol-tab takes writes and reads them back" 'put /dev/mapper/data-tab && [ "$(sum /dev/mapper/data-tab)" = "$PAT" ]'
        check "$U_TABX (CMK disabled at boot) failed, nothing opened" '[ "$(prop "$U_TABX" ActiveState)" = failed ] && [ ! -e /dev/mapper/data-tabx ]'
        check "its journal gives the plugin's reason" 'ureason "$U_TABX" vol-tabx'
        check "systemctl status shows it" 'systemctl status "$U_TABX" --no-pager -n 50 2>&1 | grep -q "cannot unlock volume vol-tabx: key .* is disabled"'
        expect 0 "evsctl --json volume show vol-tab" evsctl --json volume show vol-tab
        check "shown attached by systemd-cryptsetup as /dev/mapper/data-tab" 'echo "$out" | grep -q "\"state\": *\"attached\"" && echo "$out" | grep -q "\"attached_by\": *\"systemd-cryptsetup\"" && echo "$out" | grep -q "\"mapping\": *\"/dev/mapper/data-tab\""'
        check "coldplug attached it no second time" '[ ! -e /dev/mapper/evs-vol-tab ] && ! jv EVS_VOLUME_ID=vol-tab | grep -qi "busy"'
        expect 0 "evsctl volume attach vol-tab: already attached" evsctl volume attach vol-tab
        check "says so, naming data-tab" 'echo "$out" | grep -q "already attached as /dev/mapper/data-tab"'
        expect 5 "evsctl volume detach vol-tab refused: the unit owns it" evsctl volume detach vol-tab
        check "reason names the unit to stop" 'echo "$err" | grep -qF "systemctl stop $U_TAB"'
        check "still open, the unit still active" '[ -b /dev/mapper/data-tab ] && [ "$(state "$U_TAB")" = active/exited ]'
        expect 0 "systemctl stop $U_TAB" systemctl stop "$U_TAB"
        check "closed by its unit" '[ ! -e /dev/mapper/data-tab ]'
        expect 0 "evsctl --json volume show vol-tab" evsctl --json volume show vol-tab
        check "shown detached" 'echo "$out" | grep -q "\"state\": *\"detached\""'
        # The daemon's coldplug (and udev watch) leaves a disk of /etc/crypttab to its unit: a restart with
        # vol-tab closed does not attach it as evs-vol-tab, which would race the unit for the disk.
        tabmsgs() { journalctl -b -q --no-pager -u evs-cryptd -o cat | grep -c "Volume vol-tab appeared on .*listed in /etc/crypttab as data-tab"; }
        n_tab=$(tabmsgs)
        expect 0 "systemctl restart evs-cryptd.service, vol-tab closed" systemctl restart evs-cryptd.service
        check "coldplug says it leaves vol-tab to systemd-cryptsetup" 'wait_for 30 "[ \$(tabmsgs) -gt $n_tab ]"'
        check "and did not attach it" '[ ! -e /dev/mapper/evs-vol-tab ] && [ ! -e /dev/mapper/data-tab ]'
        echo "# 4c. crypttab: the CMK disabled, the unit fails with the plugin's reason; enabled, it opens again"
        expect 0 "evsctl key disable tabkey" evsctl key disable tabkey
        expect 1 "systemctl start $U_TAB fails" systemctl start "$U_TAB"
        check "the unit failed, nothing opened" '[ "$(prop "$U_TAB" ActiveState)" = failed ] && [ ! -e /dev/mapper/data-tab ] && [ ! -e /dev/mapper/evs-vol-tab ]'
        check "its journal gives the plugin's reason" 'ureason "$U_TAB" vol-tab'
        check "systemctl status shows it" 'systemctl status "$U_TAB" --no-pager -n 50 2>&1 | grep -q "cannot unlock volume vol-tab: key .* is disabled"'
        expect 0 "evsctl key enable tabkey" evsctl key enable tabkey
        systemctl reset-failed "$U_TAB"
        expect 0 "systemctl start $U_TAB" systemctl start "$U_TAB"
        check "/dev/mapper/data-tab is back with the data written before" '[ "$(state "$U_TAB")" = active/exited ] && [ "$(sum /dev/mapper/data-tab)" = "$PAT" ]'
fi

echo "# 2. hot-plug: attached by the udev hook, no evsctl call; unplug removes the mapping"
expect 0 "device_add vol-hot" evs-vm-ctl plug vol-hot
check "/dev/mapper/evs-vol-hot appears within 60 s" 'wait_for 60 "[ -b /dev/mapper/evs-vol-hot ]"'
check "udev gave the new disk EVS_VOLUME_ID=vol-hot" 'udevadm info --query=property /dev/disk/by-id/virtio-vol-hot | grep -qx EVS_VOLUME_ID=vol-hot'
check "journal: attached with hotkey" 'jv MESSAGE_ID=$MID_ATTACHED EVS_VOLUME_ID=vol-hot | grep -q "EVS_KEY_ALIAS=hotkey"'
check "STATUS now counts 2 volumes" 'wait_for 10 "prop evs-cryptd.service StatusText | grep -q \"^Serving 2 \""'
check "write through the hot-plugged volume" 'put /dev/mapper/evs-vol-hot'
check "read it back" '[ "$(sum /dev/mapper/evs-vol-hot)" = "$PAT" ]'
expect 0 "device_del vol-hot" evs-vm-ctl unplug vol-hot
check "the mapping is removed within 30 s" 'wait_for 30 "! dmsetup info evs-vol-hot >/dev/null 2>&1"'
check "journal: detached (MESSAGE_ID $MID_DETACHED)" 'wait_for 10 "jv MESSAGE_ID=$MID_DETACHED EVS_VOLUME_ID=vol-hot | grep -q EVS_RESULT=detached"'
check "journal: the daemon said why" 'journalctl -b -q --no-pager -u evs-cryptd -o cat | grep -q "of volume vol-hot disappeared"'
check "vol-cold untouched" '[ "$(sum /dev/mapper/evs-vol-cold)" = "$PAT" ]'

echo "# 2b. a blank disk is never formatted by a udev event"
expect 0 "device_add blank" evs-vm-ctl plug blank
check "the blank disk shows up" 'wait_for 30 "[ -b /dev/disk/by-id/virtio-blank ]"'
udevadm settle -t 30
sleep 1
check "it stays all zeros" '[ "$(tr -d "\\0" </dev/disk/by-id/virtio-blank | wc -c)" = 0 ]'
check "and is not listed" '! evsctl volume list | grep -q blank'
expect 0 "device_del blank" evs-vm-ctl unplug blank

echo "# 3. CMK disabled: the same disk hot-plugged again is refused, with the reason logged and listed"
expect 0 "evsctl key disable hotkey" evsctl key disable hotkey
n0=$(refusals vol-hot)
expect 0 "device_add vol-hot again" evs-vm-ctl plug vol-hot
check "journal: refused (MESSAGE_ID $MID_REFUSED) within 60 s" 'wait_for 60 "[ \$(refusals vol-hot) -gt $n0 ]"'
out=$(jv MESSAGE_ID=$MID_REFUSED EVS_VOLUME_ID=vol-hot)
check "the journal entry has EVS_VOLUME_ID and the reason" 'echo "$out" | grep -q "EVS_VOLUME_ID=vol-hot" && echo "$out" | grep "MESSAGE=" | grep -q "is disabled"'
check "journalctl MESSAGE_ID=$MID_REFUSED shows it" 'journalctl -b -q --no-pager MESSAGE_ID=$MID_REFUSED | grep -q "vol-hot"'
check "nothing opened" '[ ! -e /dev/mapper/evs-vol-hot ]'
check "CODE_FILE/CODE_LINE/CODE_FUNC are the call site, not the logging helper" 'echo "$out" | grep -q "CODE_FILE=src/daemon/volume-ops.c" && echo "$out" | grep -q "CODE_LINE=[0-9]" && echo "$out" | grep -q "CODE_FUNC=" && ! echo "$out" | grep -Eq "CODE_FUNC=(refuse|log_)"'
check "no record of the daemon names log.c or a build path" '! jv _COMM=evs-cryptd | grep -Eq "CODE_FILE=(/|\.\./|.*log\.c)|CODE_FUNC=log_"'
# meson install has no dpkg trigger to index the catalog (the package's has: test-package.sh).
journalctl --update-catalog
check "journalctl -x explains the refusal from evs-cryptd.catalog" 'journalctl -b -x -q --no-pager MESSAGE_ID=$MID_REFUSED EVS_VOLUME_ID=vol-hot | grep -q "Attaching EVS volume vol-hot was refused"'
expect 0 "evsctl volume list" evsctl volume list
check "the list shows the refusal and its reason" 'echo "$out" | grep "^vol-hot " | grep -q "is disabled"'
expect 0 "device_del vol-hot" evs-vm-ctl unplug vol-hot
expect 0 "evsctl key enable hotkey" evsctl key enable hotkey

if [ $# -gt 0 ]; then
        echo "# 3b. $# disks hot-plugged at once: all attached through udev, each once"
        t3=$SECONDS HP="$*" HPN=$#
        # hp_mapped: how many evs-hp-* mappings exist; hp_entries: their attach entries in the journal, "COUNT ID" lines
        hp_mapped() { dmsetup ls 2>/dev/null | grep -c "^evs-hp-"; }
        hp_entries() { jv MESSAGE_ID=$MID_ATTACHED | sed -n "s/^ *EVS_VOLUME_ID=\(hp-.*\)$/\1/p" | sort | uniq -c; }
        # shellcheck disable=SC2086  # one word per serial
        expect 0 "device_add of the $HPN disks in one QMP burst" evs-vm-ctl plug $HP
        check "all $HPN mappings appear within 180 s" 'wait_for 180 "[ \$(hp_mapped) = $HPN ]"'
        check "the journal has one attach entry for each of the $HPN" \
                'wait_for 20 "[ \$(hp_entries | wc -l) = $HPN ]" && [ "$(hp_entries | awk "{ print \$1 }" | sort -u | tr -d "\n ")" = 1 ]'
        check "no refusal among them" '! jv MESSAGE_ID=$MID_REFUSED | grep -q "EVS_VOLUME_ID=hp-"'
        expect 0 "evsctl volume list" evsctl volume list
        check "all $HPN listed attached" '[ "$(echo "$out" | grep "^hp-" | grep -c attached)" = $HPN ]'
        check "each mapping is over the disk of its serial" \
                '[ "$(for s in $HP; do dev=$(readlink -f /dev/disk/by-id/virtio-$s); [ "$(dmsetup deps -o devname "evs-$s" | sed "s/.*(\(.*\))/\1/")" = "${dev#/dev/}" ] || echo bad; done | wc -l)" = 0 ]'

        echo "# 3c. udev holding one mapping's event holds up only that attach (libdevmapper's udev wait gives the engine lock up)"
        read -r GA GB _ <<<"$HP"
        if [ -n "${GB:-}" ]; then
                GATE=/run/evs-test-udev-gate
                expect 0 "detach --force $GA and $GB" sh -c "evsctl volume detach --force $GA && evsctl volume detach --force $GB"
                # A rule before 95-dm-notify.rules (which tells libdevmapper that udev is done): udev's processing
                # of evs-$GA's change event (the resume of a new mapping) waits while the gate exists.
                mkdir -p /run/udev/rules.d
                printf '%s\n' "SUBSYSTEM==\"block\", KERNEL==\"dm-*\", ACTION==\"change\", ATTR{dm/name}==\"evs-$GA\", PROGRAM=\"/bin/sh -c 'while [ -e $GATE ]; do sleep 0.2; done'\"" \
                        >/run/udev/rules.d/90-evs-test-gate.rules
                touch $GATE
                udevadm control --reload
                rm -f "$T/gate.rc"
                ( evsctl volume attach "$GA" >"$T/gate.out" 2>&1; echo $? >"$T/gate.rc" ) &
                check "the attach of $GA opened its mapping and waits for udev" \
                        'wait_for 60 "dmsetup info evs-$GA >/dev/null 2>&1" && sleep 1 && [ ! -e "$T/gate.rc" ]'
                expect 0 "meanwhile: evsctl volume attach $GB (answers within 60 s)" timeout 60 evsctl volume attach "$GB"
                expect 0 "meanwhile: evsctl volume detach $GB" timeout 60 evsctl volume detach "$GB"
                expect 0 "meanwhile: evsctl volume list" timeout 60 evsctl volume list
                check "$GA's attach is still waiting on udev" '[ ! -e "$T/gate.rc" ]'
                rm -f $GATE
                check "with the gate gone, $GA's attach ends with exit 0" \
                        'wait_for 120 "[ -s \"$T/gate.rc\" ]" && [ "$(cat "$T/gate.rc")" = 0 ]'
                check "evs-$GA mapped, evs-$GB not" 'dmsetup info "evs-$GA" >/dev/null 2>&1 && ! dmsetup info "evs-$GB" >/dev/null 2>&1'
                rm -f /run/udev/rules.d/90-evs-test-gate.rules
                udevadm control --reload
                expect 0 "attach $GB again" evsctl volume attach "$GB"
        fi
        # shellcheck disable=SC2086
        expect 0 "device_del of the $HPN in one go" evs-vm-ctl unplug $HP
        check "every mapping is removed within 60 s" 'wait_for 60 "[ \$(hp_mapped) = 0 ]"'
        echo "# section 3b took $((SECONDS - t3)) s"
fi

echo "# 5. restart and SIGKILL leave open mappings serving I/O"
# shellcheck disable=SC2217  # holds the mapping open
sleep 3600 </dev/mapper/evs-vol-cold &
HOLDER=$!
pid0=$(prop evs-cryptd.service MainPID)
expect 0 "systemctl restart evs-cryptd" systemctl restart evs-cryptd
check "active/running again with a new MainPID" '[ "$(state evs-cryptd.service)" = active/running ] && [ "$(prop evs-cryptd.service MainPID)" != "$pid0" ]'
check "the mapping survived the restart" 'dmsetup info evs-vol-cold >/dev/null 2>&1'
check "it reads what was written before" '[ "$(sum /dev/mapper/evs-vol-cold)" = "$PAT" ]'
check "it takes writes" 'put /dev/mapper/evs-vol-cold 8 && [ "$(sum /dev/mapper/evs-vol-cold 8)" = "$PAT" ]'
expect 0 "the restarted daemon lists it as attached" evsctl --json volume show vol-cold
check "state attached" 'echo "$out" | grep -q "\"state\":\"attached\""'
pid1=$(prop evs-cryptd.service MainPID)
n0=$(prop evs-cryptd.service NRestarts)
# I/O in flight while the daemon dies.
dd if=/dev/urandom of=/dev/mapper/evs-vol-cold bs=64k count=320 seek=256 oflag=direct 2>/dev/null &
WRITER=$!
expect 0 "systemctl kill -s KILL evs-cryptd" systemctl kill -s KILL evs-cryptd
check "the daemon is gone" 'wait_for 10 "! kill -0 $pid1 2>/dev/null"'
check "the write in flight completes" 'wait $WRITER'
check "the mapping serves reads while no daemon runs" '[ "$(sum /dev/mapper/evs-vol-cold)" = "$PAT" ]'
check "and writes" 'put /dev/mapper/evs-vol-cold 12 && [ "$(sum /dev/mapper/evs-vol-cold 12)" = "$PAT" ]'
check "Restart=on-failure brings it back within 30 s" 'wait_for 30 "[ \"\$(state evs-cryptd.service)\" = active/running ] && [ \"\$(prop evs-cryptd.service MainPID)\" != $pid1 ]"'
check "NRestarts went up" '[ "$(prop evs-cryptd.service NRestarts)" -gt "$n0" ]'
expect 0 "evsctl volume list after the restart" evsctl volume list
check "vol-cold attached" 'echo "$out" | grep "^vol-cold " | grep -q attached'
check "the data is intact" '[ "$(sum /dev/mapper/evs-vol-cold)" = "$PAT" ] && [ "$(sum /dev/mapper/evs-vol-cold 8)" = "$PAT" ]'
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null

echo "# 6. socket activation: the first evsctl call starts the service"
expect 0 "systemctl stop evs-cryptd.service" systemctl stop evs-cryptd.service
check "service inactive, socket still listening" '[ "$(prop evs-cryptd.service ActiveState)" = inactive ] && [ "$(state evs-cryptd.socket)" = active/listening ]'
check "stopping left vol-cold open" 'dmsetup info evs-vol-cold >/dev/null 2>&1'
rm -f "$PROM/evs-cryptd.prom"
expect 0 "evs-cryptd-metrics.service with the daemon stopped" systemctl start evs-cryptd-metrics.service
check "skipped by its ExecCondition=: no file, and the daemon not started through its socket" '[ ! -e "$PROM/evs-cryptd.prom" ] && [ "$(prop evs-cryptd.service ActiveState)" = inactive ]'
if [ -n "$PROM_MADE" ]; then rm -rf /var/lib/prometheus; fi
expect 0 "evsctl volume list (first call)" evsctl volume list
check "it answered with the volumes" 'echo "$out" | grep "^vol-cold " | grep -q attached'
check "the service is active now" '[ "$(state evs-cryptd.service)" = active/running ]'
check "triggered by evs-cryptd.socket" '[ "$(prop evs-cryptd.service TriggeredBy)" = evs-cryptd.socket ]'
check "the same socket file all along (the daemon never made its own)" '[ -n "$BUS_INODE" ] && [ "$(stat -c %i /run/evs-cryptd/bus)" = "$BUS_INODE" ]'
if [ "$TAB" = 1 ]; then
        check "no device-mapper device left but data-tab and evs-vol-cold" '[ "$(dmsetup info -c --noheadings -o name | sort | tr "\n" " ")" = "data-tab evs-vol-cold " ]'
        expect 0 "the restarted daemon shows vol-tab attached by systemd-cryptsetup" evsctl --json volume show vol-tab
        check "as /dev/mapper/data-tab" 'echo "$out" | grep -q "\"attached_by\": *\"systemd-cryptsetup\"" && echo "$out" | grep -q "\"mapping\": *\"/dev/mapper/data-tab\""'
        expect 5 "and refuses to detach it" evsctl volume detach vol-tab
else
        check "no device-mapper device left but evs-vol-cold" '[ "$(dmsetup info -c --noheadings -o name | sort | tr "\n" " ")" = "evs-vol-cold " ]'
fi

echo "# 7. the sandbox"
out=$(systemd-analyze security evs-cryptd.service --no-pager 2>&1)
score=$(echo "$out" | sed -n 's/.*Overall exposure level for evs-cryptd.service: \([0-9.]*\).*/\1/p')
echo "# systemd-analyze security: ${score:-?}"
check "exposure ${score:-?} <= 2.5" '[ -n "$score" ] && awk -v s="$score" "BEGIN { exit !(s <= 2.5) }"'
check "no permission or seccomp errors logged by the daemon" '! journalctl -b -q --no-pager -u evs-cryptd -o cat | grep -Eqi "permission denied|operation not permitted|bad system call|read-only file system"'
check "no core dump, no watchdog timeout" '! journalctl -b -q --no-pager -u evs-cryptd -o cat | grep -Eqi "watchdog timeout|dumped core"'

if [ "$failed" != 0 ]; then
        echo "--- journal of evs-cryptd"
        journalctl -b -q --no-pager -u evs-cryptd.service -u evs-cryptd.socket | tail -n 80
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
