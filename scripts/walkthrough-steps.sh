#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The main job of evs-cryptd on the embedded local KMS, step by step. Needs device-mapper: run by
# scripts/walkthrough.sh, inside a VM when the host kernel has none.  Args: DISK1 DISK2
set -eu
D1=$1 D2=$2
W=/tmp/evs-walkthrough
mkdir -p "$W"
cat >"$W/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$W/state
BusPath=$W/bus
CONF
export EVS_BUS=$W/bus

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
refused() { printf '$ %s\n' "$*"; if "$@"; then echo "UNEXPECTED: this should have been refused"; exit 1; else echo "(refused, exit $?)"; fi; }

step "Start evs-cryptd (state in $W/state, bus on $W/bus)"
evs-cryptd --config "$W/evs-cryptd.conf" 2>"$W/daemon.log" &
DPID=$!
trap 'kill $DPID 2>/dev/null' EXIT
while [ ! -S "$W/bus" ]; do sleep 0.1; done
run evsctl status

step "Create a customer master key"
run evsctl key create finance --description "Finance team volumes"
run evsctl key list

step "Create two encrypted volumes: one on the new key, one on evs/default"
run evsctl volume create "$D1" --id vol-finance --key finance
run evsctl volume create "$D2" --id vol-shared

step "Attach them: /dev/mapper/evs-<volume id> appears"
run evsctl volume attach vol-finance
run evsctl volume attach vol-shared
run evsctl volume list

step "Write data through the mapping"
echo "quarterly numbers $(date -u +%FT%TZ)" >"$W/data"
run dd if="$W/data" of=/dev/mapper/evs-vol-finance bs=4096 conv=sync,fsync status=none
echo "on disk (ciphertext):"; dd if="$D1" bs=1 skip=16777216 count=32 status=none | od -An -tx1 | head -2

step "Disable the key: the open volume keeps working"
run evsctl key disable finance
printf 'read back: '; dd if=/dev/mapper/evs-vol-finance bs=4096 count=1 status=none | head -1
run evsctl volume list

step "Detach: refused, since the volume could not be attached again (the detach guard)"
refused evsctl volume detach vol-finance

step "Detach anyway (--force, logged as such), then try to re-attach: refused, with the reason"
run evsctl volume detach --force vol-finance
refused evsctl volume attach vol-finance

step "evs/default can never be disabled"
refused evsctl key disable evs/default

step "Enable the key and re-attach: the data is intact"
run evsctl key enable finance
run evsctl volume attach vol-finance
printf 'read back: '; dd if=/dev/mapper/evs-vol-finance bs=4096 count=1 status=none | head -1

step "Detach everything"
run evsctl volume detach vol-finance
run evsctl volume detach vol-shared
run evsctl volume list

step "What the daemon logged (attach, detach, refusal: structured, with MESSAGE_ID)"
cat "$W/daemon.log"
echo
echo "Walkthrough complete."
