#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Guest side of run-kmip.sh --rekey: KMIP rotation (ReKey) on a real kernel. Volumes wrapped with versions 1 and
# 2 of a KMIP CMK attach as real dm-crypt mappings (unwrap follows the Replacement Object Links); rewrap --all
# while they are attached moves them to the newest version without touching the mappings or the data; a
# disabled key refuses the attach of every version. Disks: vda=rot-k1 vdb=rot-k2.
set -u
T=/tmp/evs
mkdir -p "$T"
chmod 0400 /etc/evs-kmip/*.key

modprobe virtio_net && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || { echo "no network"; exit 1; }

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=/var/lib/evs-cryptd
BusPath=/run/evs-cryptd/bus

[Backend kmip]
Type=kmip
Host=10.0.2.100
Port=5696
ServerName=127.0.0.1
CAFile=/etc/evs-kmip/ca.pem
CertificateFile=/etc/evs-kmip/client.pem
KeyFile=/etc/evs-kmip/client.key
CONF
export EVS_BUS=/run/evs-cryptd/bus

. /usr/lib/evs-tests/tap.sh

evs-cryptd --config "$T/evs-cryptd.conf" >>"$T/daemon.log" 2>&1 &
i=0
until evsctl status >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
sum() { dd if="$1" bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1; }
field() { echo "$out" | tr -d ' \n' | sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p"; }
head -c 4194304 /dev/urandom >"$T/pattern"
PAT=$(sha256sum "$T/pattern" | cut -d' ' -f1)

echo "# 1. volumes wrapped with versions 1 and 2 of a KMIP key attach"
expect 0 "create key app-rot on kmip" evsctl --json key create app-rot --backend kmip
KEY=$(field id)
expect 0 "rot-k1 under version 1" evsctl volume create /dev/vda --id rot-k1 --key kmip:app-rot
expect 0 "rotate kmip:app-rot (ReKey)" evsctl --json key rotate kmip:app-rot
check "same id, version 2" '[ "$(field id)" = "$KEY" ] && [ "$(field version)" = 2 ]'
expect 0 "rot-k2 under version 2" evsctl volume create /dev/vdb --id rot-k2 --key kmip:app-rot
for v in rot-k1 rot-k2; do
        expect 0 "attach $v" evsctl volume attach $v
        check "write the pattern to $v" 'dd if=$T/pattern of=/dev/mapper/evs-$v bs=1M conv=fsync 2>/dev/null'
        expect 0 "detach $v" evsctl volume detach $v
        expect 0 "re-attach $v" evsctl volume attach $v
        check "$v reads the pattern back" '[ "$(sum /dev/mapper/evs-$v)" = "$PAT" ]'
done
expect 0 "volume show rot-k1 --json" evsctl --json volume show rot-k1
check "rot-k1: key version 1 of 2, outdated" '[ "$(field key_version),$(field key_latest_version),$(field key_outdated)" = "1,2,true" ]'

echo "# 2. rewrap --all under attached volumes"
expect 0 "rotate to version 3" evsctl key rotate kmip:app-rot
expect 0 "rewrap --all" evsctl volume rewrap --all
check "both re-wrapped" 'echo "$out" | grep -q "2 volume(s) re-wrapped under their key.s newest version, 0 failed"'
for v in rot-k1 rot-k2; do
        check "$v still attached and reading" '[ -b /dev/mapper/evs-$v ] && [ "$(sum /dev/mapper/evs-$v)" = "$PAT" ]'
        expect 0 "volume show $v --json" evsctl --json volume show $v
        check "$v at version 3" '[ "$(field key_version),$(field key_outdated)" = "3,false" ]'
        expect 0 "detach $v" evsctl volume detach $v
        expect 0 "attach $v at version 3" evsctl volume attach $v
        check "$v reads the pattern back" '[ "$(sum /dev/mapper/evs-$v)" = "$PAT" ]'
        expect 0 "detach $v" evsctl volume detach $v
done

echo "# 3. a disabled key refuses every version"
expect 0 "create key app-st on kmip" evsctl key create app-st --backend kmip
expect 0 "rot-k1 re-wrapped under app-st version 1" evsctl volume rewrap rot-k1 --key kmip:app-st
expect 0 "rotate app-st" evsctl key rotate kmip:app-st
expect 0 "rot-k2 re-wrapped under app-st version 2" evsctl volume rewrap rot-k2 --key kmip:app-st
expect 0 "disable app-st" evsctl key disable kmip:app-st
for v in rot-k1 rot-k2; do
        expect 3 "attach $v refused" evsctl volume attach $v
        check "reason says disabled" 'echo "$err" | grep -q "disabled"'
        check "no mapping for $v" '[ ! -e /dev/mapper/evs-$v ]'
done

[ "$failed" = 0 ] || { echo "--- daemon log"; tail -40 "$T/daemon.log"; }
tap_done
