#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# CMK rotation on a real kernel (issue 12), one boot: volumes wrapped with key versions 1 and 2 attach as real
# dm-crypt mappings; rewrap --all while they are attached moves them to the newest version without touching the
# open mappings or the data; a disabled key refuses the attach of every version.
# Disks: vda=rot-a vdb=rot-b vdc=rot-c (serials = volume ids).
set -u

T=/tmp/evs
mkdir -p "$T"
CONF=$T/evs-cryptd.conf
cat >"$CONF" <<CONF
[Daemon]
StateDirectory=/var/lib/evs-cryptd
BusPath=/run/evs-cryptd/bus
CONF
export EVS_BUS=/run/evs-cryptd/bus

. /usr/lib/evs-tests/tap.sh

evs-cryptd --config "$CONF" >>"$T/daemon.log" 2>&1 &
i=0
until evsctl status >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
sum() { dd if="$1" bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1; }
field() { echo "$out" | tr -d ' \n' | sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p"; }
head -c 4194304 /dev/urandom >"$T/pattern"
PAT=$(sha256sum "$T/pattern" | cut -d' ' -f1)

echo "# 1. volumes wrapped with versions 1 and 2 attach"
expect 0 "create key rk" evsctl key create rk
expect 0 "rot-a under version 1" evsctl volume create /dev/vda --id rot-a --key rk
expect 0 "rotate rk" evsctl --json key rotate rk
check "rk is version 2" '[ "$(field version)" = 2 ]'
expect 0 "rot-b under version 2" evsctl volume create /dev/vdb --id rot-b --key rk
expect 0 "rot-c under version 2" evsctl volume create /dev/vdc --id rot-c --key rk
for v in rot-a rot-b; do
        expect 0 "attach $v" evsctl volume attach $v
        check "write the pattern to $v" 'dd if=$T/pattern of=/dev/mapper/evs-$v bs=1M conv=fsync 2>/dev/null'
        expect 0 "detach $v" evsctl volume detach $v
        expect 0 "re-attach $v" evsctl volume attach $v
        check "$v reads the pattern back" '[ "$(sum /dev/mapper/evs-$v)" = "$PAT" ]'
done
expect 0 "volume show rot-a --json" evsctl --json volume show rot-a
check "rot-a: key version 1 of 2, outdated" '[ "$(field key_version),$(field key_latest_version),$(field key_outdated)" = "1,2,true" ]'

echo "# 2. rewrap --all under attached volumes"
expect 0 "rotate rk to version 3" evsctl key rotate rk
expect 0 "rewrap --all" evsctl volume rewrap --all
check "all three re-wrapped" 'echo "$out" | grep -q "3 volume(s) re-wrapped under their key.s newest version, 0 failed"'
for v in rot-a rot-b; do
        check "$v still attached and reading" '[ -b /dev/mapper/evs-$v ] && [ "$(sum /dev/mapper/evs-$v)" = "$PAT" ]'
        expect 0 "volume show $v --json" evsctl --json volume show $v
        check "$v at version 3, attached" '[ "$(field key_version),$(field key_outdated)" = "3,false" ] && echo "$out" | grep -q "\"state\": *\"attached\""'
        expect 0 "detach $v" evsctl volume detach $v
        expect 0 "attach $v at version 3" evsctl volume attach $v
        check "$v reads the pattern back" '[ "$(sum /dev/mapper/evs-$v)" = "$PAT" ]'
done
expect 0 "volume show rot-c --json" evsctl --json volume show rot-c
check "rot-c (detached) at version 3" '[ "$(field key_version)" = 3 ]'
expect 0 "attach rot-c" evsctl volume attach rot-c

echo "# 3. a disabled key refuses every version"
for v in rot-a rot-b rot-c; do expect 0 "detach $v" evsctl volume detach $v; done
expect 0 "disable rk" evsctl key disable rk
for v in rot-a rot-b rot-c; do
        expect 3 "attach $v refused" evsctl volume attach $v
        check "no mapping for $v" '[ ! -e /dev/mapper/evs-$v ]'
done
expect 0 "enable rk" evsctl key enable rk
expect 0 "attach rot-a again" evsctl volume attach rot-a
check "rot-a reads the pattern back" '[ "$(sum /dev/mapper/evs-rot-a)" = "$PAT" ]'
expect 0 "detach rot-a" evsctl volume detach rot-a

[ "$failed" = 0 ] || { echo "--- daemon log"; tail -40 "$T/daemon.log"; }
tap_done
