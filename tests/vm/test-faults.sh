#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The vm part of the fault suite (the host part: tests/integration/test-faults.sh): evs-cryptd SIGKILLed at
# random points of volume attach and of volume detach, $EVS_FAULT_RUNS times each (default 20). After each
# kill the daemon is restarted and checked: what the client was told is true (an attach answered "ok" has its
# mapping, a detach answered "ok" has none), the daemon reports the state the kernel has, a mapping that
# exists is whole (a table, active, the data reads back), and the same command run again succeeds. At the
# end every volume attaches and reads back. The leftover of an attach killed between creating the device
# and loading its table is made on purpose too (the window is too short to hit reliably). Last, a disk whose I/O
# hangs (a suspended linear mapping of fb's): its attach waits, while another volume attaches, the volume list
# answers and a detach goes through; then a detach --force of fb while that disk hangs again goes through
# without reading it, and volume list and volume show answer, fb shown from its record as not answering, and a
# show of a volume that must be searched for by label (a read of every disk, fb's too) answers within its bound.
# Disks: vda=fa vdb=fb (serials = volume ids).
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
RUNS=${EVS_FAULT_RUNS:-20}

. /usr/lib/evs-tests/tap.sh

DPID=
start_daemon() {
        evs-cryptd --config "$CONF" >>"$T/daemon.log" 2>&1 &
        DPID=$!
        w=0
        until evsctl status >/dev/null 2>&1 || [ $w -ge 200 ]; do sleep 0.1; w=$((w + 1)); done
}
kill_daemon() { kill -9 "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null; DPID=; }
now_ms() {
        read -r up _ </proc/uptime
        frac=${up#*.}
        echo $((${up%.*} * 1000 + ${frac#0} * 10))
}
# A mapping that exists must be whole: a crypt table, active (not suspended), reading back the pattern.
mapped() { dmsetup info "evs-$1" >/dev/null 2>&1; }
live_table() { dmsetup info "evs-$1" 2>/dev/null | grep -q "^Tables present: *LIVE"; }
whole() {
        dmsetup table "evs-$1" 2>/dev/null | grep -q " crypt " &&
                dmsetup info "evs-$1" | grep -q "^State: *ACTIVE" &&
                [ "$(timeout 20 dd if="/dev/mapper/evs-$1" bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$PAT" ]
}
state_of() { evsctl --json volume show "$1" 2>/dev/null | tr -d ' \n' | sed -n 's/.*"state":"\([a-z-]*\)".*/\1/p'; }
# The kill lands at a random point of [window/3, window] ms; the window follows the operation's duration
# (shorter after a run that finished before the kill, longer after one killed before it did anything).
killed_run() {
        "$@" >/dev/null 2>"$T/client.err" &
        c=$!
        ms=$((window / 3 + RANDOM % (window * 2 / 3 + 1)))
        usleep $((ms * 1000))
        kill_daemon
        wait "$c"
        rc=$?
        start_daemon
}
adapt() {
        if [ "$1" = finished ]; then window=$((window * 9 / 10 + 1)); else window=$((window * 23 / 20 + 1)); fi
}

start_daemon
head -c 4194304 /dev/urandom >"$T/pattern"
PAT=$(sha256sum "$T/pattern" | cut -d' ' -f1)
expect 0 "key k" evsctl key create k
for v in fa:/dev/vda fb:/dev/vdb; do
        id=${v%%:*} dev=${v#*:}
        expect 0 "create $id" evsctl volume create "$dev" --id "$id" --key k
        expect 0 "attach $id" evsctl volume attach "$id"
        check "write the pattern to $id" 'dd if=$T/pattern of=/dev/mapper/evs-$id bs=1M conv=fsync 2>/dev/null'
done
expect 0 "detach fa" evsctl volume detach fa

echo "# 0. what an attach killed between creating the device and loading its table leaves: a mapping with no table"
check "a table-less evs-fa (dmsetup create --notable)" 'dmsetup create --notable evs-fa && mapped fa && ! whole fa'
expect 0 "attach fa over it" evsctl volume attach fa
check "it is replaced by the real mapping, not taken as attached" 'whole fa'
check "the daemon says why" 'grep -q "Removed mapping evs-fa, which an interrupted attach left without a table" "$T/daemon.log"'
expect 0 "detach fa" evsctl volume detach fa
check "a table-less evs-fa again" 'dmsetup create --notable evs-fa'
expect 0 "detach removes a table-less mapping too" evsctl volume detach fa
check "and it is gone" '! mapped fa'

t0=$(now_ms)
evsctl volume attach fa >/dev/null 2>&1
window=$(( ($(now_ms) - t0) * 5 / 4 + 20 ))
evsctl volume detach fa >/dev/null 2>&1
echo "# attach: kills spread over ${window} ms at first"

echo "# 1. SIGKILL during attach, $RUNS times"
bad=0 done_=0 none=0 tableless=0
for i in $(seq "$RUNS"); do
        mapped fa && evsctl volume detach fa >/dev/null 2>&1
        killed_run evsctl volume attach fa
        if [ "$rc" = 0 ]; then adapt finished; done_=$((done_ + 1)); elif ! mapped fa; then adapt early; none=$((none + 1)); fi
        if [ "$rc" = 0 ] && ! mapped fa; then bad=$((bad + 1)); echo "# attach $i: reported done, no mapping"; fi
        st=$(state_of fa)
        if mapped fa && ! live_table fa; then
                # Killed between creating the device and loading its table (evs-cryptd(8) ON DISK): no
                # attached volume, which the daemon must say; the retry below replaces it.
                tableless=$((tableless + 1))
                [ "$st" = detached ] || { bad=$((bad + 1)); echo "# attach $i: a mapping without a table, but the daemon says $st"; }
        elif mapped fa; then
                whole fa || { bad=$((bad + 1)); echo "# attach $i: a mapping that is not whole: $(dmsetup info evs-fa | tr '\n' ' ')"; }
                [ "$st" = attached ] || { bad=$((bad + 1)); echo "# attach $i: mapped, but the daemon says $st"; }
        else
                [ "$st" = detached ] || { bad=$((bad + 1)); echo "# attach $i: not mapped, but the daemon says $st"; }
        fi
        evsctl volume attach fa >/dev/null 2>"$T/retry.err" || { bad=$((bad + 1)); echo "# attach $i: the retry failed: $(cat "$T/retry.err")"; }
        whole fa || { bad=$((bad + 1)); echo "# attach $i: after the retry the mapping is not whole"; }
done
echo "# attach: $RUNS kills (last window ${window} ms): $done_ finished before the kill, $none before the mapping, $tableless between the device and its table"
check "attach: $RUNS SIGKILLs, the answer and the reported state are true, every retry works" '[ "$bad" = 0 ]'

t0=$(now_ms)
evsctl volume detach fa >/dev/null 2>&1
window=$(( ($(now_ms) - t0) * 5 / 4 + 20 ))
evsctl volume attach fa >/dev/null 2>&1

echo "# 2. SIGKILL during detach, $RUNS times"
bad=0 done_=0 none=0
for i in $(seq "$RUNS"); do
        mapped fa || evsctl volume attach fa >/dev/null 2>&1
        killed_run evsctl volume detach fa
        if [ "$rc" = 0 ]; then adapt finished; done_=$((done_ + 1)); elif mapped fa; then adapt early; none=$((none + 1)); fi
        if [ "$rc" = 0 ] && mapped fa; then bad=$((bad + 1)); echo "# detach $i: reported done, still mapped"; fi
        st=$(state_of fa)
        if mapped fa; then
                whole fa || { bad=$((bad + 1)); echo "# detach $i: a mapping that is not whole: $(dmsetup info evs-fa | tr '\n' ' ')"; }
                [ "$st" = attached ] || { bad=$((bad + 1)); echo "# detach $i: mapped, but the daemon says $st"; }
        else
                [ "$st" = detached ] || { bad=$((bad + 1)); echo "# detach $i: not mapped, but the daemon says $st"; }
        fi
        evsctl volume detach fa >/dev/null 2>"$T/retry.err" || { bad=$((bad + 1)); echo "# detach $i: the retry failed: $(cat "$T/retry.err")"; }
        mapped fa && { bad=$((bad + 1)); echo "# detach $i: after the retry still mapped"; }
done
echo "# detach: $RUNS kills (last window ${window} ms): $done_ finished before the kill, $none before the mapping went"
check "detach: $RUNS SIGKILLs, the answer and the reported state are true, every retry works" '[ "$bad" = 0 ]'

echo "# 3. every volume still attaches and reads back"
for id in fa fb; do
        mapped "$id" && evsctl volume detach "$id" >/dev/null 2>&1
        expect 0 "attach $id" evsctl volume attach "$id"
        check "$id reads back the pattern" 'whole $id'
done
check "no stray evs mappings" '[ "$(dmsetup ls | grep -c "^evs-")" = 2 ]'

echo "# 4. a disk whose I/O hangs: its attach waits for it, the daemon goes on meanwhile"
# fb seen through a linear mapping that is then suspended: every read of it waits until the resume. The
# page cache is dropped first, so that the header read really reaches the disk.
in_d_state() { for s in /proc/"$DPID"/task/*/stat; do [ "$(cut -d' ' -f3 "$s" 2>/dev/null)" = D ] && return 0; done; return 1; }
evsctl volume detach fa >/dev/null 2>&1
evsctl volume detach fb >/dev/null 2>&1
check "a linear mapping hang-fb of fb's disk, suspended" \
        'dmsetup create hang-fb --table "0 $(cat /sys/block/vdb/size) linear /dev/vdb 0" && sync && echo 3 >/proc/sys/vm/drop_caches && dmsetup suspend hang-fb'
evsctl volume attach /dev/mapper/hang-fb >"$T/hang.out" 2>"$T/hang.err" &
HANG=$!
w=0
until in_d_state || [ $w -ge 200 ]; do sleep 0.1; w=$((w + 1)); done
check "the attach of hang-fb is stuck in the disk's I/O (a daemon thread in D state)" 'in_d_state && kill -0 $HANG'
# timeout: a daemon that read the header with its engine lock held would answer only after the resume.
expect 0 "attach fa meanwhile" timeout 30 evsctl volume attach fa
check "fa reads back the pattern" 'whole fa'
expect 0 "volume list meanwhile" timeout 30 evsctl volume list
expect 0 "detach fa meanwhile" timeout 30 evsctl volume detach fa
check "the attach of hang-fb is still waiting" 'kill -0 $HANG && in_d_state'
check "resume hang-fb" 'dmsetup resume hang-fb'
wait "$HANG"
rc=$?
check "then its attach ends, exit $rc: $(cat "$T/hang.err")" '[ "$rc" = 0 ]'
check "fb is attached on hang-fb and reads back the pattern" 'whole fb && dmsetup deps -o devname evs-fb | grep -q "(hang-fb)"'

echo "# 5. detach --force of a volume whose disk's I/O hangs: nothing reads the disk, the mapping goes"
# A daemon (or libcryptsetup, given no context) that read fb's header to detach it would wait on the disk:
# exit 124, and with the engine lock held every other request too.
check "hang-fb suspended again under fb's open mapping, the page cache dropped" \
        'sync && echo 3 >/proc/sys/vm/drop_caches && dmsetup suspend hang-fb'
expect 0 "detach --force fb while its disk hangs" timeout 30 evsctl volume detach --force fb
check "evs-fb is gone" '! dmsetup info evs-fb >/dev/null 2>&1'
check "no daemon thread waits on the disk" '! in_d_state'
expect 0 "status meanwhile" timeout 30 evsctl status
expect 0 "attach fa meanwhile" timeout 30 evsctl volume attach fa
expect 0 "detach fa meanwhile" timeout 30 evsctl volume detach fa

echo "# 6. volume list and volume show while fb's disk hangs: fb shown from its record as not answering"
# fb's record names /dev/mapper/hang-fb, whose I/O waits. A list that read fb's header and waited for it would
# answer only after the resume (exit 124).
d_threads() { n=0; for s in /proc/"$DPID"/task/*/stat; do [ "$(cut -d' ' -f3 "$s" 2>/dev/null)" = D ] && n=$((n + 1)); done; echo $n; }
expect 0 "volume list while fb's disk hangs" timeout 30 evsctl volume list
check "fb listed as not answering, fa as detached: $(printf '%s' "$out" | tr '\n' '|')" \
        'printf "%s\n" "$out" | grep "^fb " | grep -q "disk not answering" && printf "%s\n" "$out" | grep "^fa " | grep -q detached'
expect_compact 0 "volume show fb while its disk hangs" timeout 30 evsctl --json volume show fb
check "it shows fb's record, not answering: $out" 'printf "%s" "$out" | grep -q "\"id\":\"fb\".*\"last_error\":\"disknotanswering"'
expect 1 "volume show /dev/mapper/hang-fb: exit 1" timeout 30 evsctl volume show /dev/mapper/hang-fb
check "one line naming the disk that does not answer: $err" '[ "$(printf "%s\n" "$err" | wc -l)" = 1 ] && printf "%s" "$err" | grep -q "/dev/mapper/hang-fb does not answer"'
expect 0 "volume list once more" timeout 30 evsctl volume list
check "one daemon thread waits on fb's disk, however often it was asked for: $(d_threads)" '[ "$(d_threads)" = 1 ]'
# A volume no record or mapping places is looked for by label, a scan of every disk: fb's too, which waits.
# A show that waited for that scan would answer only after the resume (exit 124).
for i in 1 2; do
        expect 1 "volume show of an unknown volume while fb's disk hangs ($i)" timeout 30 evsctl volume show nosuch
        check "one line: $err" '[ "$(printf "%s\n" "$err" | wc -l)" = 1 ] && printf "%s" "$err" | grep -q "nosuch"'
done
check "at most one more daemon thread waits on a disk, for the scan: $(d_threads)" '[ "$(d_threads)" -le 2 ]'
# A recorded volume whose disk is gone (fz: fa's record under another id, on a disk this guest does not have)
# is searched for by label too. A list or show that waited for that search would answer only after the resume.
V=/var/lib/evs-cryptd/volumes
check "a record of fz, whose disk is gone" \
        "sed -e 's|\"id\": *\"fa\"|\"id\":\"fz\"|' -e 's|\"/dev/vda\"|\"/dev/vdz\"|' $V/fa.json >$V/fz.json && grep -q vdz $V/fz.json"
expect 0 "volume list while fb's disk hangs and fz's is gone" timeout 30 evsctl volume list
check "fz listed as not found, fb as not answering: $(printf '%s' "$out" | tr '\n' '|')" \
        'printf "%s\n" "$out" | grep "^fz " | grep -q "disk not found" && printf "%s\n" "$out" | grep "^fb " | grep -q "disk not answering"'
expect_compact 0 "volume show fz" timeout 30 evsctl --json volume show fz
check "it shows fz's record, not found: $out" 'printf "%s" "$out" | grep -q "\"id\":\"fz\".*\"last_error\":\"disknotfound"'
check "fz's record removed" "rm $V/fz.json"
expect 0 "status meanwhile" timeout 30 evsctl status
check "resume hang-fb" 'dmsetup resume hang-fb'
w=0
until ! in_d_state || [ $w -ge 300 ]; do sleep 0.1; w=$((w + 1)); done
check "then no daemon thread waits on the disk" '! in_d_state'
expect 0 "volume list" timeout 30 evsctl volume list
check "fb listed as detached, without a note: $(printf '%s' "$out" | tr '\n' '|')" \
        'printf "%s\n" "$out" | grep "^fb " | grep -q detached && ! printf "%s\n" "$out" | grep "^fb " | grep -q "not answering"'
check "remove hang-fb" 'dmsetup remove hang-fb'
kill "$DPID"; wait "$DPID" 2>/dev/null
if [ "$failed" != 0 ]; then echo "--- daemon log"; tail -50 "$T/daemon.log"; fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
