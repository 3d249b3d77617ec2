#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The attach engine under a storm, in one boot (run by tests/vm/run-storm.sh inside the guest): 50 volumes st-000..
# st-049 on the exec backend "tk" (the C test helper, its call log in $LOG), loop devices /dev/loop0..49 over
# /dev/vda (slot i = loop i = st-i). Checks correctness, never timing: the calls overlap, each volume is attached
# exactly once with at most one KMS call, attaches of one volume are serialised, SIGTERM mid-storm leaves only
# complete, recorded mappings.
set -u

T=/tmp/evs
mkdir -p "$T"
N=50
KMS=/var/lib/evs-storm-kms LOG=$T/kms.log CONF=$T/evs-cryptd.conf DLOG=$T/daemon.log
export EVS_BUS=/run/evs-cryptd/bus
. /usr/lib/evs-tests/tap.sh

# conf DELAY_MS [PERSISTENT]: the helper answers every call after DELAY_MS; PERSISTENT yes: Persistent=yes
conf() {
        printf '[Daemon]\nStateDirectory=/var/lib/evs-cryptd\nBusPath=%s\nAutoAttach=no\n' "$EVS_BUS" >"$CONF"
        printf '[Backend tk]\nType=exec\nHelper=/usr/bin/evs-kms-test-helper\nTimeout=60\nPersistent=%s\n' "${2:-no}" >>"$CONF"
        printf 'Option.dir=%s\nOption.log=%s\nOption.delay=%s\n' "$KMS" "$LOG" "$1" >>"$CONF"
}
DPID=
start_daemon() {
        local i=0
        evs-cryptd --config "$CONF" >>"$DLOG" 2>&1 &
        DPID=$!
        until evsctl status >/dev/null 2>&1; do
                i=$((i + 1))
                [ $i -lt 300 ] || { not_ok "the daemon did not start"; tail -n 20 "$DLOG"; exit 1; }
                sleep 0.1
        done
}
stop_daemon() {
        [ -n "$DPID" ] || return 0
        kill "$DPID"
        wait "$DPID" 2>/dev/null
        DPID=
}
ids() { for i in $(seq 0 $((N - 1))); do printf 'st-%03d\n' "$i"; done; }
# storm VERB NAME: N `evsctl volume VERB st-NNN` at once; START END STATUS per call in $T/NAME.times
storm() {
        ids | sed "s/^/evsctl volume $1 /" | evs-bench-run --parallel --times "$T/$2.times" --errors "$T/$2.err" |
                sed "s/^/# $2: /"
}
failures() { awk '$3 != 0' "$T/$1.times" | wc -l; }
mapped() { dmsetup ls 2>/dev/null | grep -c '^evs-st-'; }
mapped_names() { dmsetup ls 2>/dev/null | awk '/^evs-st-/ { sub(/^evs-/, "", $1); print $1 }' | sort; }
# the most helper calls in flight at once, from their start/end times
inflight() {
        awk '{ s = $1; sub(/\./, "", s); print s, 1; if ($2 != "-") { e = $2; sub(/\./, "", e); print e, -1 } }' "$LOG" |
                sort -n -k1,1 -k2,2 | awk '{ c += $2; if (c > m) m = c } END { print m + 0 }'
}
unwraps() { awk -v v="$1" '$4 == "unwrap" && $6 == v' "$LOG" | wc -l; }
# the volumes `evsctl --json volume list` shows in STATE
listed() {
        evsctl --json volume list | tr -d '\n ' | sed 's/},{/}\n{/g' |
                awk -v want="$1" '{ id = ""; st = ""
                        if (match($0, /"id":"[^"]*"/)) id = substr($0, RSTART + 6, RLENGTH - 7)
                        if (match($0, /"state":"[^"]*"/)) st = substr($0, RSTART + 9, RLENGTH - 10)
                        if (st == want) print id }' | sort
}
# attached entries (MESSAGE_ID of an attach) per volume in the daemon's log
attach_entries() { grep -c "EVS_VOLUME_ID=$1 EVS_RESULT=attached" "$DLOG"; }

evs-bench-run --loop-setup /dev/vda $((17 * 1024 * 1024)) $N || { not_ok "cannot set up the loop devices"; exit 1; }
conf 20
start_daemon

echo "# 1. a storm of $N attaches, the KMS answering in 20 ms"
: >"$LOG"
storm attach s1
check "all $N attaches exit 0 ($(failures s1) failed: $(sort "$T/s1.err" | uniq -c | sort -rn | head -n 2 | tr '\n' ' '))" '[ "$(failures s1)" = 0 ]'
cp "$LOG" "$T/s1.log"   # the attaches' calls only (volume list below may describe the CMK)
check "$N mappings" '[ "$(mapped)" = $N ]'
check "each mapping is over its own volume's loop device (st-i on 7:i)" \
        '[ "$(ids | while read -r v; do dmsetup table "evs-$v" | awk -v want="7:$((10#${v#st-}))" "\$7 != want"; done | wc -l)" = 0 ]'
check "evsctl volume list: the $N attached" '[ "$(listed attached | wc -l)" = $N ]'
LOG=$T/s1.log
check "the helper's calls overlapped: $(inflight) in flight at once (> 1)" '[ "$(inflight)" -gt 1 ]'
check "exactly one unwrap per volume" '[ "$(ids | while read -r v; do unwraps "$v"; done | sort -u | tr "\n" " ")" = "1 " ]'
check "at most one KMS call per attach ($(wc -l <"$LOG") calls: $(awk '{ print $4 }' "$LOG" | sort | uniq -c | tr -s ' ' | tr '\n' ','))" \
        '[ "$(wc -l <"$LOG")" -le $N ]'
LOG=$T/kms.log
check "each volume attached exactly once (one attach entry each in the log)" \
        '[ "$(ids | while read -r v; do attach_entries "$v"; done | sort -u | tr "\n" " ")" = "1 " ]'
check "no throttled or failed KMS call" '[ "$(awk "\$7 != \"ok\"" "$LOG" | wc -l)" = 0 ]'

echo "# 2. a storm of $N detaches"
: >"$LOG"
storm detach s2
check "all $N detaches exit 0" '[ "$(failures s2)" = 0 ]'
check "no mapping left" '[ "$(mapped)" = 0 ]'
# The detach guard (evsctl(8): a volume that could not be attached again is not detached without --force)
# asks the KMS at most once per detach, a describe (describes of the CMK that overlap share one call,
# evs-cryptd(8)); nothing else is called (--force and udev removal ask nothing).
check "at most one describe per detach, nothing else ($(wc -l <"$LOG") calls, $(awk '$4 != "describe"' "$LOG" | wc -l) other)" \
        '[ "$(wc -l <"$LOG")" -ge 1 ] && [ "$(wc -l <"$LOG")" -le $N ] && [ "$(awk '\''$4 != "describe"'\'' "$LOG" | wc -l)" = 0 ]'
check "evsctl volume list: the $N detached" '[ "$(listed detached | wc -l)" = $N ]'

echo "# 3. one volume: attach of an attached volume, 8 concurrent attaches (the KMS answering in 500 ms)"
stop_daemon
conf 500
start_daemon
: >"$LOG"
expect 0 "attach st-000" evsctl volume attach st-000
expect 0 "attach st-000 again" evsctl volume attach st-000
check "it says already attached" 'echo "$out" | grep -q "already attached"'
check "one KMS call for the two (the second: none)" '[ "$(wc -l <"$LOG")" = 1 ] && [ "$(unwraps st-000)" = 1 ]'
: >"$LOG"
for i in $(seq 8); do echo "evsctl volume attach st-001"; done | evs-bench-run --parallel --times "$T/s3.times" --errors "$T/s3.err" | sed 's/^/# s3: /'
check "8 concurrent attaches of st-001 all exit 0 ($(sort "$T/s3.err" | uniq -c | head -n 2 | tr '\n' ' '))" '[ "$(failures s3)" = 0 ]'
check "one mapping evs-st-001" '[ "$(dmsetup ls | grep -c "^evs-st-001")" = 1 ] && dmsetup table evs-st-001 | grep -q " crypt "'
check "one KMS call for the 8 ($(wc -l <"$LOG"))" '[ "$(wc -l <"$LOG")" = 1 ] && [ "$(unwraps st-001)" = 1 ]'
check "one attach entry for st-001" '[ "$(attach_entries st-001)" = 2 ]'   # section 1 made the first
expect 0 "detach st-000" evsctl volume detach st-000
expect 0 "detach st-001" evsctl volume detach st-001

echo "# 4. SIGTERM in the middle of a storm (the KMS answering in 100 ms), persistent helpers from here"
stop_daemon
conf 100 yes
start_daemon
: >"$LOG"
(storm attach s4 >/dev/null) &
RUNNER=$!
i=0
while [ "$(mapped)" -lt 5 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
t0=${EPOCHREALTIME/[.,]/}
kill -TERM "$DPID"
i=0
while kill -0 "$DPID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ms=$(((${EPOCHREALTIME/[.,]/} - t0) / 1000))
check "the daemon stopped within 10 s of SIGTERM ($ms ms)" '! kill -0 "$DPID" 2>/dev/null'
wait "$DPID" 2>/dev/null
DPID=
i=0
while kill -0 "$RUNNER" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
check "every caller returned" '! kill -0 "$RUNNER" 2>/dev/null'
wait "$RUNNER" 2>/dev/null
helpers=$(awk '{ print $3 }' "$LOG" | sort -u)
check "the storm's calls were served by persistent helpers ($(wc -w <<<"$helpers") processes for $(wc -l <"$LOG") calls), none outlives the daemon" \
        '[ "$(wc -w <<<"$helpers")" -lt "$(wc -l <"$LOG")" ] && ! for p in $helpers; do kill -0 "$p" 2>/dev/null && echo alive; done | grep -q alive'
mapped_names >"$T/open"
n_open=$(wc -l <"$T/open")
echo "# $n_open of $N were open at SIGTERM; $(failures s4) calls failed"
check "the storm was cut in the middle (0 < $n_open < $N)" '[ "$n_open" -gt 0 ] && [ "$n_open" -lt $N ]'
check "no device-mapper device but whole evs-st-* mappings (no temporary or table-less one)" \
        '[ "$(dmsetup info -c --noheadings -o name 2>/dev/null | grep -vc "^evs-st-")" = 0 ] && [ "$(while read -r v; do dmsetup table "evs-$v" | grep -c " crypt "; done <"$T/open" | sort -u | tr "\n" " ")" = "1 " ]'
check "and all of them active (not suspended)" \
        '[ "$(while read -r v; do dmsetup info "evs-$v" | grep -c "^State: *ACTIVE"; done <"$T/open" | sort -u | tr "\n" " ")" = "1 " ]'
conf 0 yes
start_daemon
check "after a restart, volume list shows exactly those attached" '[ "$(listed attached)" = "$(cat "$T/open")" ]'
check "and the others detached" '[ "$(listed detached | wc -l)" = $((N - n_open)) ]'
: >"$LOG"
storm attach s5
cp "$LOG" "$T/s5.log"
check "the storm again: all $N exit 0" '[ "$(failures s5)" = 0 ]'
check "$N mappings" '[ "$(mapped)" = $N ]'
# A restarted daemon has seen no state of the CMK yet: one describe of it may come with the first attach of an
# open volume (or from the key check at start); none per volume.
check "KMS calls only for the $((N - n_open)) that were not open, plus at most one describe of the CMK ($(awk '{ print $4 }' "$T/s5.log" | sort | uniq -c | tr -s ' ' | tr '\n' ','))" \
        '[ "$(awk "\$4 == \"unwrap\"" "$T/s5.log" | wc -l)" = $((N - n_open)) ] && [ "$(awk "\$4 != \"unwrap\"" "$T/s5.log" | wc -l)" -le 1 ]'
check "evs-cryptd restarted: volume list shows all attached" '[ "$(listed attached | wc -l)" = $N ]'
storm detach s6
check "and all detach" '[ "$(failures s6)" = 0 ] && [ "$(mapped)" = 0 ]'

stop_daemon
if [ "$failed" != 0 ]; then echo "--- daemon log (end, without the attach/detach entries)"; grep -v "EVS_RESULT=\(attached\|detached\)" "$DLOG" | tail -n 40; fi
tap_done
