#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The guest side of bench/attach-storm (run by tests/vm/evs-vm): N SAMPLES DELAY_MS RPS.
# The volumes were formatted on the host (bench/attach-storm, tests/vm/prepare-volumes.sh) onto /dev/vda; the
# guest makes them loop devices. Scratch files live in a tmpfs.
set -u
N=$1 M=$2 DELAY=$3 RPS=$4
B=/bench
mkdir -p $B && mount -t tmpfs -o size=90% tmpfs $B || exit 1
mkdir -p $B/img $B/tab $B/t $B/e
KMS=/var/lib/evs-bench-kms LOG=$B/kms.log CONF=$B/evs-cryptd.conf ROWS=$B/rows DLOG=$B/daemon.log
export EVS_BUS=/run/evs-cryptd/bus
: >$ROWS

say() { echo "# $*"; }
die() { echo "attach-storm: $*"; [ -s $DLOG ] && tail -n 20 $DLOG; exit 1; }
idx() { printf '%03d' "$1"; }

# ---- the daemon ----
RPS_OK=1 SERVE_OK=1 PERSIST=0
# write_conf DELAY RPS QUOTA: the helper answers after DELAY ms, the daemon keeps to RPS requests/s (0: no
# limit), the helper refuses above QUOTA requests/s (0: none) with "throttled"; PERSIST=1: Persistent=yes.
write_conf() {
        {
                printf '[Daemon]\nStateDirectory=/var/lib/evs-cryptd\nBusPath=%s\nAutoAttach=no\n' "$EVS_BUS"
                printf '[Backend tk]\nType=exec\nHelper=/usr/bin/evs-kms-test-helper\nTimeout=120\n'
                printf 'Option.dir=%s\nOption.log=%s\n' "$KMS" "$LOG"
                [ "$1" -gt 0 ] && printf 'Option.delay=%s\n' "$1"
                [ "$3" -gt 0 ] && printf 'Option.rate=%s\n' "$3"
                [ "$2" -gt 0 ] && [ $RPS_OK = 1 ] && printf 'RequestsPerSecond=%s\n' "$2"
                [ "$PERSIST" = 1 ] && [ $SERVE_OK = 1 ] && printf 'Persistent=yes\n'
        } >$CONF
}
DPID=
start_daemon() {
        local i=0
        evs-cryptd --config $CONF >>$DLOG 2>&1 &
        DPID=$!
        until evsctl status >/dev/null 2>&1; do
                i=$((i + 1))
                [ $i -lt 300 ] || die "the daemon did not answer"
                sleep 0.1
        done
}
stop_daemon() {
        [ -n "$DPID" ] || return 0
        kill "$DPID"
        wait "$DPID" 2>/dev/null
        DPID=
}
hwm_kib() { awk '/^VmHWM:/ { print $2 }' /proc/$DPID/status; }
# CPU time in clock ticks: of the whole guest (not idle, not iowait), and of the daemon itself (its threads;
# reaped children, one-shot helpers, in cutime/cstime).
cpu_all() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
cpu_daemon() { awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' /proc/$DPID/stat; }

# ---- measuring ----
# run NAME [--parallel] < COMMANDS: times in $B/t/NAME, stderr of the commands in $B/e/NAME.
run() {
        local name=$1
        shift
        evs-bench-run "$@" --times $B/t/$name --errors $B/e/$name >/dev/null || die "evs-bench-run failed"
}
# stats NAME: "n ok p50 p99 wall" (milliseconds) from $B/t/NAME.
stats() {
        awk '{ s[NR] = $1; e[NR] = $2; lat[NR] = ($2 - $1) / 1000; ok += ($3 == 0)
               if (NR == 1 || $1 < t0) t0 = $1; if ($2 > t1) t1 = $2 }
             END { n = NR; if (!n) { print "0 0 0 0 0"; exit }
                   for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (lat[j] < lat[i]) { x = lat[i]; lat[i] = lat[j]; lat[j] = x }
                   r50 = int((n * 50 + 99) / 100); r99 = int((n * 99 + 99) / 100)
                   printf "%d %d %.1f %.1f %.1f\n", n, ok, lat[r50], lat[r99], (t1 - t0) / 1000 }' $B/t/$1
}
# kms_calls: lines in the helper's log; kms_inflight: the most calls whose intervals overlap (a hang line, with
# no end, counts as open until the end).
kms_calls() { [ -f $LOG ] && wc -l <$LOG || echo 0; }
kms_inflight() {
        [ -s $LOG ] || { echo 0; return; }
        awk '{ s = $1; sub(/\./, "", s); print s, 1; if ($2 != "-") { e = $2; sub(/\./, "", e); print e, -1 } }' $LOG |
                sort -n -k1,1 -k2,2 | awk '{ c += $2; if (c > m) m = c } END { print m + 0 }'
}
# kms_pace NAME: "LEAD RATE N" of attach phase NAME from the helper's log: how long after the phase's first command
# the first KMS call started (s), the calls a second from the first start to the last, and their number.
kms_pace() {
        [ -s $LOG ] || { echo "0 0 0"; return; }
        awk -v t0="$(awk 'NR == 1 || $1 < m { m = $1 } END { print m }' $B/t/$1-open)" '{ s = $1 + 0; if (NR == 1 || s < a) a = s; if (s > b) b = s; n++ }
                END { printf "%.2f %.2f %d\n", a - t0 / 1e6, (b > a ? (n - 1) / (b - a) : 0), n }' $LOG
}
kms_by_op() { [ -s $LOG ] && awk '{ n[$4 "/" $7]++ } END { for (k in n) printf "%s %s=%d", sep, k, n[k]; sep = "," }' $LOG; }
metric() { # metric NAME: the value of NAME{backend="tk"...} in `evsctl metrics`, or n/a
        evsctl metrics 2>/dev/null | awk -v m="$1" '$1 ~ "^" m "\\{" && $1 ~ /backend="tk"/ { print $2; f = 1; exit } END { if (!f) print "n/a" }'
}
# lock_use NAME: "HELD_S JOBS WAITED_S CPU_S" of the daemon's engine lock since its start, from `evsctl metrics`
# (the histograms evs_engine_lock_{hold,wait}_seconds, one sample per job, and the CPU time used holding it), into
# $B/lock-NAME; "n/a" for a build without them.
lock_use() {
        evsctl metrics 2>/dev/null | awk '$1 == "evs_engine_lock_hold_seconds_sum" { h = $2 } $1 == "evs_engine_lock_hold_seconds_count" { n = $2 }
                $1 == "evs_engine_lock_wait_seconds_sum" { w = $2 } $1 == "evs_engine_lock_hold_cpu_seconds_total" { c = $2 }
                END { if (n == "") print "n/a"; else print h, n, w, c }' >$B/lock-$1
}
# unlock_ms FILE LABEL: the measured time (ms per operation) of bench-unlock's row LABEL in FILE
unlock_ms() { awk -v l="$2" 'index($0, l) == 1 { split(substr($0, 46), f, " "); print f[1]; exit }' "$1" 2>/dev/null; }
# TCG: the guest/host time of the header load and volume key check rows together, the bulk of an attach's work
# under the engine lock (0 when unknown).
tcg_factor() {
        local hr hv gr gv
        hr=$(unlock_ms /etc/evs-bench/unlock-host "header load of an attach") hv=$(unlock_ms /etc/evs-bench/unlock-host "volume key check")
        gr=$(unlock_ms $B/unlock-guest "header load of an attach") gv=$(unlock_ms $B/unlock-guest "volume key check")
        awk -v a="$hr" -v b="$hv" -v c="$gr" -v d="$gv" 'BEGIN { printf "%.1f", (a + b > 0 && c + d > 0) ? (c + d) / (a + b) : 0 }'
}
# lock_info NAME LABEL R WALL: the storm's device work, done one job at a time under the engine lock, against N/R
# and the wall. The CPU time used holding the lock is the serialised work itself: however many CPUs, the storm
# cannot end sooner (held time beyond it is the holder waiting on the kernel, or for a CPU that others use).
lock_info() {
        read -r held jobs _ cpu <$B/lock-$1
        [ "$held" = n/a ] && return
        local f
        f=$(tcg_factor)
        echo "info: $2 the engine lock was held $(awk -v h="$held" 'BEGIN { printf "%.1f", h }') s in all, $(awk -v h="$held" -v w="$4" 'BEGIN { printf "%.2f", h * 1000 / w }') of the wall; CPU used holding it $(awk -v c="$cpu" 'BEGIN { printf "%.1f", c }') s ($(awk -v c="$cpu" -v j="$jobs" 'BEGIN { printf "%.1f", c * 1000 / j }') ms for each of $jobs jobs): $(awk -v c="$cpu" -v n="$N" -v r="$3" 'BEGIN { printf "%.2f", c / (n / r) }') x N/$3$(awk -v c="$cpu" -v n="$N" -v r="$3" -v f="$f" 'BEGIN { if (f > 0) printf "; at the host CPU'"'"'s speed (TCG factor %.1f) %.2f x N/%s", f, c / f / (n / r), r }')"
}
# row LABEL NAME CALLS INFLIGHT_LOG INFLIGHT_METRICS HWM_KIB
row() { echo "$1|$(stats "$2")|$3|$4|$5|$6" >>$ROWS; }
mapped() { dmsetup ls 2>/dev/null | grep -c "^$1" || true; }

# ---- volumes: loop devices over the disk tests/vm/prepare-volumes.sh made, slot i = /dev/loop<i> ----
SLOTS=/etc/evs-bench/slots
declare -A DEV=()
while read -r slot id; do DEV[$id]=/dev/loop$slot; done <$SLOTS
dev() { echo "${DEV[$1]}"; }
evs-bench-run --loop-setup /dev/vda $((17 * 1024 * 1024)) "$(wc -l <$SLOTS)" || die "cannot set up the loop devices"

say "guest: $(nproc) vCPU, $(awk '/MemTotal/ { printf "%d MiB", $2 / 1024 }' /proc/meminfo), kernel $(uname -r), $(cryptsetup --version)"
write_conf 0 "$RPS" 0
if ! evs-cryptd --config $CONF --check-config >/dev/null 2>$B/check.err; then
        RPS_OK=0
        say "this evs-cryptd has no RequestsPerSecond= ($(head -n1 $B/check.err)): (g) runs without it"
fi
PERSIST=1 write_conf 0 0 0
if ! evs-cryptd --config $CONF --check-config >/dev/null 2>$B/check.err; then
        SERVE_OK=0
        say "this evs-cryptd has no Persistent= ($(head -n1 $B/check.err)): the persistent rows run one-shot helpers"
fi
write_conf 0 0 0
start_daemon
bench-unlock 20 >$B/unlock-guest 2>&1 || say "bench-unlock failed in the guest: $(tail -n 1 $B/unlock-guest)"

say "volumes: $M plain LUKS2 (bb-*), $M on the local KMS (bl-*), $N on the exec helper (bx-*), as loop devices"
cp /etc/evs-bench/luks.key $B/bkey
printf 'bench passphrase' >$B/pass

# ---- (a) stock cryptsetup, argon2id ----
truncate -s 17M $B/img/ba.img
T1=$SECONDS
cryptsetup luksFormat -q --type luks2 --key-file $B/pass $B/img/ba.img || die "luksFormat (argon2id) failed"
say "(a) argon2id luksFormat (with its benchmark) took $((SECONDS - T1)) s: $(cryptsetup luksDump $B/img/ba.img | awk '/PBKDF:/ { p = $2 } /Memory:/ { m = $2 } /Time cost:/ { t = $3 } END { printf "%s, memory %s KiB, time cost %s", p, m, t }')"
ADEV=$(losetup -f --show $B/img/ba.img)
: >$B/t/a-open; : >$B/t/a-close
for i in 1 2 3; do
        echo "cryptsetup open --key-file $B/pass $ADEV bench-a" | run a1
        cat $B/t/a1 >>$B/t/a-open
        echo "cryptsetup close bench-a" | run a1
        cat $B/t/a1 >>$B/t/a-close
done
row "(a) cryptsetup open, argon2id" a-open - - - -
row "(a) cryptsetup close" a-close - - - -

# ---- (b) cryptsetup --key-file, PBKDF2-1000 keyslot; (c) dmsetup create, the same table ----
for i in $(seq 0 $((M - 1))); do id=bb-$(idx "$i"); echo "cryptsetup open --key-file $B/bkey $(dev $id) bench-$id"; done | run b-open
[ "$(mapped bench-bb-)" = "$M" ] || die "(b): $(mapped bench-bb-) of $M mappings: $(head -n 3 $B/e/b-open)"
# The floor's table: cryptsetup's, with the key given in it (cryptsetup passes it through the kernel keyring); any
# 512-bit key makes the same mapping work for the kernel, nothing is read through it.
HEX=$(head -c 64 /dev/urandom | od -An -tx1 -v | tr -d ' \n')
for i in $(seq 0 $((M - 1))); do id=bb-$(idx "$i"); dmsetup table --showkeys bench-$id | awk -v k="$HEX" '{ $5 = k; print }' >$B/tab/$id; done
for i in $(seq 0 $((M - 1))); do echo "cryptsetup close bench-bb-$(idx "$i")"; done | run b-close
row "(b) cryptsetup open --key-file, pbkdf2" b-open - - - -
row "(b) cryptsetup close" b-close - - - -
for i in $(seq 0 $((M - 1))); do id=bb-$(idx "$i"); echo "dmsetup create bench-$id $B/tab/$id"; done | run c-open
[ "$(mapped bench-bb-)" = "$M" ] || die "(c): $(mapped bench-bb-) of $M mappings: $(head -n 3 $B/e/c-open)"
for i in $(seq 0 $((M - 1))); do echo "dmsetup remove bench-bb-$(idx "$i")"; done | run c-close
row "(c) dmsetup create (floor)" c-open - - - -
row "(c) dmsetup remove (floor)" c-close - - - -
# (c-storm): N `dmsetup create` at once, the same table on the N exec volumes' devices: how many mappings a
# second this guest can make at all, whoever asks.
for i in $(seq 0 $((N - 1))); do id=bx-$(idx "$i"); awk -v d="$(dev "$id")" '{ $7 = d; print }' $B/tab/bb-000 >$B/tab/$id; done
c0=$(cpu_all)
for i in $(seq 0 $((N - 1))); do id=bx-$(idx "$i"); echo "dmsetup create bench-$id $B/tab/$id"; done | run cs-open --parallel
c1=$(cpu_all)
[ "$(mapped bench-bx-)" = "$N" ] || die "(c-storm): $(mapped bench-bx-) of $N mappings: $(head -n 3 $B/e/cs-open)"
say "(c-storm) N dmsetup create at once: CPU per create: $(awk -v a=$((c1 - c0)) -v n="$N" -v hz="$(getconf CLK_TCK 2>/dev/null || echo 100)" 'BEGIN { printf "%.0f ms in the guest", a * 1000 / hz / n }')"
for i in $(seq 0 $((N - 1))); do echo "dmsetup remove bench-bx-$(idx "$i")"; done | run cs-close --parallel
[ "$(mapped bench-bx-)" = 0 ] || die "(c-storm): $(mapped bench-bx-) mappings left after remove"
row "(c-storm) N dmsetup create at once (floor)" cs-open - - - -
row "(c-storm) N dmsetup remove at once (floor)" cs-close - - - -

# ---- (d-local) evsctl, local KMS, one after another ----
for i in $(seq 0 $((M - 1))); do echo "evsctl volume attach bl-$(idx "$i")"; done | run dl-open
[ "$(mapped evs-bl-)" = "$M" ] || die "(d-local): $(mapped evs-bl-) of $M mappings: $(head -n 3 $B/e/dl-open)"
shape() { awk '{ $5 = "KEY"; $7 = "DEV"; print }'; }
s_evs=$(dmsetup table evs-bl-000 | shape) s_cs=$(shape <$B/tab/bb-000)
if [ "$s_evs" = "$s_cs" ]; then say "table shape, evs = cryptsetup = dmsetup: $s_evs"; else say "table shapes differ: evs: $s_evs; cryptsetup: $s_cs"; fi
for i in $(seq 0 $((M - 1))); do echo "evsctl volume detach bl-$(idx "$i")"; done | run dl-close
row "(d-local) evsctl attach, local KMS, serial" dl-open - - - "$(hwm_kib)"
row "(d-local) evsctl detach, serial" dl-close - - - -

# ---- (d) .. (g): the exec helper ----
# The requests of a phase: from N evsctl processes (VIA=evsctl), or from one process that makes the N bus calls
# itself, each on a connection of its own (VIA=bus: the daemon's side of a storm without N process starts, as
# in a storm of disks that udev announces, whose attaches the daemon makes itself).
VIA=evsctl
# requests VERB COUNT: the phase's lines for run (VERB attach, detach)
requests() {
        for i in $(seq 0 $(($2 - 1))); do
                if [ $VIA = bus ]; then echo "$1 bx-$(idx "$i")"; else echo "evsctl volume $1 bx-$(idx "$i")"; fi
        done
}
# phase LABEL NAME DELAY RPS QUOTA COUNT [--parallel]: COUNT volumes bx-000.. attached, then detached
phase() {
        local label=$1 name=$2 count=$6 par=${7:-} calls inflight m hwm via=
        [ $VIA = bus ] && via="--bus $EVS_BUS"
        stop_daemon
        write_conf "$3" "$4" "$5"
        start_daemon
        : >$LOG
        local c0=$(cpu_all) d0=$(cpu_daemon) c1 d1 hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
        requests attach "$count" | run $name-open $par $via
        c1=$(cpu_all) d1=$(cpu_daemon)
        calls=$(kms_calls) inflight=$(kms_inflight) m=$(metric evs_kms_max_in_flight) hwm=$(hwm_kib)
        kms_pace $name >$B/pace-$name
        lock_use $name
        { [ -s $LOG ] && awk '$7 == "throttled"' $LOG | wc -l || echo 0; } >$B/thr-$name
        say "$label: KMS calls by op/result:$(kms_by_op); $(mapped evs-bx-) of $count mapped"
        say "$label: CPU per attach: $(awk -v a=$((c1 - c0)) -v d=$((d1 - d0)) -v n="$count" -v hz="$hz" 'BEGIN { printf "%.0f ms in the guest, of it %.0f ms the daemon and its reaped helpers", a * 1000 / hz / n, d * 1000 / hz / n }')"
        say "$label: engine lock: $(awk '{ if ($1 == "n/a") print "n/a (no evs_engine_lock_* metrics)"; else printf "held %.1f ms (using %.1f ms of CPU), waited %.1f ms per job (%d jobs); held %.1f s in all", $1 * 1000 / $2, $4 * 1000 / $2, $3 * 1000 / $2, $2, $1 }' $B/lock-$name)"
        [ "$(mapped evs-bx-)" = "$count" ] || say "$label: attach failures: $(sort $B/e/$name-open | uniq -c | sort -rn | head -n 3)"
        row "$label attach" $name-open "$calls" "$inflight" "$m" "$hwm"
        : >$LOG
        requests detach "$count" | run $name-close $par $via
        row "$label detach" $name-close "$(kms_calls)" "$(kms_inflight)" - "$(hwm_kib)"
        [ "$(mapped evs-bx-)" = 0 ] || { say "$label: $(mapped evs-bx-) mappings left after detach"; dmsetup ls | grep evs-bx- | awk '{ print $1 }' | while read -r m; do dmsetup remove "$m"; done; }
}
phase "(d) evsctl, exec KMS 0 ms, serial" d 0 0 0 "$M"
# The detach guard (issue 11) asks the KMS for the CMK's state: one describe per detach. Without it
# (--force, as a udev removal is), a detach makes no KMS call.
for i in $(seq 0 $((M - 1))); do echo "evsctl volume attach bx-$(idx "$i")"; done | run dfa-open
: >$LOG
for i in $(seq 0 $((M - 1))); do echo "evsctl volume detach --force bx-$(idx "$i")"; done | run df-close
row "(d) evsctl detach --force (no guard), serial" df-close "$(kms_calls)" "$(kms_inflight)" - "$(hwm_kib)"
phase "(e-once) N at once, exec KMS 0 ms, one-shot" eo 0 0 0 "$N" --parallel
# From here the helper is persistent (Persistent=yes): a storm's configuration.
PERSIST=1
phase "(d-serve) evsctl, exec KMS 0 ms, Persistent, serial" ds 0 0 0 "$M"
phase "(e) N at once, exec KMS 0 ms" e 0 0 0 "$N" --parallel
phase "(f) N at once, exec KMS ${DELAY} ms" f "$DELAY" 0 0 "$N" --parallel
phase "(g) (f) + RequestsPerSecond=$RPS, quota $RPS/s" g "$DELAY" "$RPS" "$RPS" "$N" --parallel
G_THROTTLED=$(grep -ci throttl $B/e/g-open || true)
# (h): a quota low enough to bind here (N/RH s longer than the storm's own CPU-bound time on 1 TCG vCPU).
RH=$(((RPS + 3) / 4))
phase "(h) (g) with RequestsPerSecond=$RH, quota $RH/s" h "$DELAY" "$RH" "$RH" "$N" --parallel
H_THROTTLED=$(grep -ci throttl $B/e/h-open || true)
VIA=bus
phase "(e1) (e) from one client, N bus calls at once" e1 0 0 0 "$N" --parallel
phase "(g1) (g) from one client, N bus calls at once" g1 "$DELAY" "$RPS" "$RPS" "$N" --parallel
G1_THROTTLED=$(grep -ci throttl $B/e/g1-open || true)
# (h1): (h) from one client: the quota that binds, without the lead of N process starts before the first call.
phase "(h1) (h) from one client, N bus calls at once" h1 "$DELAY" "$RH" "$RH" "$N" --parallel
H1_THROTTLED=$(grep -ci throttl $B/e/h1-open || true)
VIA=evsctl
PERSIST=0
stop_daemon

# ---- report ----
echo
printf '%-50s %4s %4s %9s %9s %9s %9s %10s %9s\n' "" n ok "p50 ms" "p99 ms" "wall ms" "KMS/op" "in flight" "VmHWM"
printf '%-50s %4s %4s %9s %9s %9s %9s %10s %9s\n' "" "" "" "" "" "" "" "log/metr" "MiB"
while IFS='|' read -r label st calls inf infm hwm; do
        set -- $st
        per=-
        [ "$calls" != - ] && per=$(awk -v c="$calls" -v n="$1" 'BEGIN { printf "%.2f", n ? c / n : 0 }')
        fl=-
        [ "$inf" != - ] && fl="$inf/$infm"
        mib=-
        [ -n "$hwm" ] && [ "$hwm" != - ] && mib=$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')
        printf '%-50s %4s %4s %9s %9s %9s %9s %10s %9s\n' "$label" "$1" "$2" "$3" "$4" "$5" "$per" "$fl" "$mib"
done <$ROWS

get() { # get LABEL-PREFIX FIELD: FIELD of the stats of the first row whose label starts with LABEL-PREFIX
        awk -F'|' -v p="$1" -v f="$2" 'index($1, p) == 1 { split($2, s, " ")
                v["n"] = s[1]; v["ok"] = s[2]; v["p50"] = s[3]; v["p99"] = s[4]; v["wall"] = s[5]
                v["calls"] = $3; v["hwm"] = $6; print v[f]; exit }' $ROWS
}
goal() { # goal TEXT VALUE AWK-CONDITION-ON-v
        if awk -v v="$2" "BEGIN { exit !($3) }"; then echo "goal: $1: $2 (met)"; else echo "goal: $1: $2 (NOT met)"; fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo
goal "(d-local)/(c) attach p50 <= 2.0" "$(ratio "$(get '(d-local) evsctl attach' p50)" "$(get '(c) dmsetup create' p50)")" 'v <= 2.0'
goal "(d)/(c) attach p50 (exec KMS, one-shot helper) <= 2.0" "$(ratio "$(get '(d) evsctl' p50)" "$(get '(c) dmsetup create' p50)")" 'v <= 2.0'
goal "(d-serve)/(c) attach p50 (exec KMS, persistent helper) <= 2.0" "$(ratio "$(get '(d-serve) evsctl' p50)" "$(get '(c) dmsetup create' p50)")" 'v <= 2.0'
goal "(d-local)/(b) attach p50 <= 1.0" "$(ratio "$(get '(d-local) evsctl attach' p50)" "$(get '(b) cryptsetup open' p50)")" 'v <= 1.0'
we=$(get '(e) N at once' wall) wf=$(get '(f) N at once' wall)
echo "info: (e) vs (e-once), the storm's wall with persistent vs one-shot helpers: $(ratio "$we" "$(get '(e-once) N at once' wall)")x"
echo "info: (e) N at once vs (d) one after another, wall per volume: $(ratio "$(awk -v w="$we" -v n="$N" 'BEGIN { print w / n }')" "$(awk -v w="$(get '(d) evsctl' wall)" -v n="$M" 'BEGIN { print w / n }')")x (1.0: no overlap at all)"
goal "(f) wall <= 1.2 x (e) wall + 100 ms: ${wf} ms vs 1.2 x ${we} + 100 =" "$(awk -v e="$we" 'BEGIN { printf "%.0f", 1.2 * e + 100 }')" "$wf <= v"
# A throttled answer is the KMS refusing to serve the call (its quota), and its retry the quota rule of issue 9:
# the economy counts the calls the KMS served, and the line says how many throttled answers were retried.
maxc=0 retried=0
for np in 'd|(d) evsctl' 'eo|(e-once) N at once' 'ds|(d-serve) evsctl' 'e|(e) N at once' 'f|(f) N at once' 'g|(g) (f)' 'h|(h) (g)' 'e1|(e1) (e) from' 'g1|(g1) (g) from' 'h1|(h1) (h) from'; do
        p=${np#*|} t=$(cat $B/thr-"${np%%|*}" 2>/dev/null || echo 0)
        retried=$((retried + t))
        c=$(awk -v c="$(get "$p" calls)" -v t="$t" -v n="$(get "$p" n)" 'BEGIN { printf "%.2f", n ? (c - t) / n : 0 }')
        maxc=$(awk -v a="$c" -v b="$maxc" 'BEGIN { print (a > b ? a : b) }')
done
goal "KMS calls served per attach <= 1 (the most of d..h, e1, g1, h1; besides, $retried throttled answers retried in all)" "$maxc" 'v <= 1'
# per_detach REGEX: the most KMS calls per detach of the detach rows whose label matches REGEX
per_detach() {
        awk -F'|' -v re="$1" '$1 ~ re && $1 ~ / detach$/ { split($2, s, " "); if (s[1] > 0 && $3 / s[1] > m) m = $3 / s[1] }
                END { printf "%.2f", m }' $ROWS
}
goal "KMS calls per detach = 0 with the detach guard, one after another (the most of d, d-serve)" "$(per_detach '^[(](d|d-serve)[)] evsctl, ')" 'v == 0'
goal "KMS calls per detach = 0 with the detach guard, N at once (the most of e..h, e1, g1, h1; describes of one CMK that overlap share a call)" "$(per_detach '^[(](e|f|g|h|e-once|e1|g1|h1)[)] ')" 'v == 0'
goal "KMS calls per detach = 0 without the guard (--force)" "$(awk -v c="$(get '(d) evsctl detach --force' calls)" -v n="$(get '(d) evsctl detach --force' n)" 'BEGIN { printf "%.2f", n ? c / n : 0 }')" 'v == 0'
wg=$(get '(g) (f)' wall) wcs=$(get '(c-storm) N dmsetup create' wall)
echo "info: (c-storm), the floor's own storm: $(awk -v w="$wcs" -v n="$N" 'BEGIN { printf "%.1f", (w > 0 ? n * 1000 / w : 0) }') mappings/s; (e) wall vs (c-storm) wall: $(ratio "$we" "$wcs")x"
echo "info: (g) wall vs the larger of N/$RPS s and (e) wall (the storm's own CPU-bound time): $(awk -v w="$wg" -v n="$N" -v r="$RPS" -v e="$we" 'BEGIN { b = n / r * 1000; if (e > b) b = e; printf "%.2f", w / b }')x (1.0: the quota costs nothing beyond what binds)"
echo "info: (g) wall vs the larger of N/$RPS s and (c-storm) wall (the kernel floor's storm): $(awk -v w="$wg" -v n="$N" -v r="$RPS" -v c="$wcs" 'BEGIN { b = n / r * 1000; if (c > b) b = c; printf "%.2f", w / b }')x"
goal "(g) wall ~ N/$RPS s = $(awk -v n="$N" -v r="$RPS" 'BEGIN { printf "%.1f", n / r }') s: wall/(N/$RPS)" "$(awk -v w="$wg" -v n="$N" -v r="$RPS" 'BEGIN { printf "%.2f", w / 1000 / (n / r) }')" 'v >= 0.8 && v <= 1.3'
wg1=$(get '(g1) (g) from one client' wall) we1=$(get '(e1) (e) from one client' wall)
echo "info: (e1) vs (e), the storm from one client vs from N evsctl processes: $(ratio "$we1" "$we")x; (g1) vs (g): $(ratio "$wg1" "$wg")x"
goal "(g1) wall ~ N/$RPS s from one client (no N process starts): wall/(N/$RPS)" "$(awk -v w="$wg1" -v n="$N" -v r="$RPS" 'BEGIN { printf "%.2f", w / 1000 / (n / r) }')" 'v >= 0.8 && v <= 1.3'
echo "info: (g1) wall vs the larger of N/$RPS s and (e1) wall: $(awk -v w="$wg1" -v n="$N" -v r="$RPS" -v e="$we1" 'BEGIN { b = n / r * 1000; if (e > b) b = e; printf "%.2f", w / b }')x"
lock_info e1 "(e1)" "$RPS" "$we1"
lock_info g1 "(g1)" "$RPS" "$wg1"
goal "(g1) no throttled error reaching a caller: failed attaches, of them throttled = $G1_THROTTLED" "$(awk -v n="$(get '(g1) (g) from one client' n)" -v o="$(get '(g1) (g) from one client' ok)" 'BEGIN { print n - o }')" "v == 0 && $G1_THROTTLED == 0"
goal "(g) no throttled error reaching a caller: failed attaches, of them throttled = $G_THROTTLED" "$(awk -v n="$(get '(g) (f)' n)" -v o="$(get '(g) (f)' ok)" 'BEGIN { print n - o }')" "v == 0 && $G_THROTTLED == 0"
wh=$(get '(h) (g)' wall)
# pace_info NAME LABEL R WALL: the quota rows seen from the KMS: the storm's clients start first (N evsctl processes
# on the guest's CPUs) and only then do KMS calls come, at most R within any 1.05 s (kms-gate.c).
pace_info() {
        read -r lead rate n <$B/pace-$1
        echo "info: $2 KMS calls: the first $lead s after the storm began, then $rate calls/s to the last ($n calls; RequestsPerSecond=$3 allows $(awk -v r="$3" 'BEGIN { printf "%.2f", r / 1.05 }')/s); wall minus that lead vs N/$3: $(awk -v w="$4" -v l="$lead" -v n="$N" -v r="$3" 'BEGIN { printf "%.2f", (w / 1000 - l) / (n / r) }')"
}
lock_info e "(e)" "$RPS" "$we"
lock_info g "(g)" "$RPS" "$wg"
pace_info g "(g)" "$RPS" "$wg"
pace_info h "(h)" "$RH" "$wh"
goal "(h) wall ~ N/$RH s = $(awk -v n="$N" -v r="$RH" 'BEGIN { printf "%.1f", n / r }') s where that quota binds: wall/(N/$RH)" "$(awk -v w="$wh" -v n="$N" -v r="$RH" 'BEGIN { printf "%.2f", w / 1000 / (n / r) }')" 'v >= 0.8 && v <= 1.3'
goal "(h) no throttled error reaching a caller: failed attaches, of them throttled = $H_THROTTLED" "$(awk -v n="$(get '(h) (g)' n)" -v o="$(get '(h) (g)' ok)" 'BEGIN { print n - o }')" "v == 0 && $H_THROTTLED == 0"
wh1=$(get '(h1) (h) from one client' wall)
pace_info h1 "(h1)" "$RH" "$wh1"
goal "(h1) wall ~ N/$RH s from one client, where that quota binds and no N process starts come first: wall/(N/$RH)" "$(awk -v w="$wh1" -v n="$N" -v r="$RH" 'BEGIN { printf "%.2f", w / 1000 / (n / r) }')" 'v >= 0.8 && v <= 1.3'
echo "info: (h1) wall vs the larger of N/$RH s and (e1) wall: $(awk -v w="$wh1" -v n="$N" -v r="$RH" -v e="$we1" 'BEGIN { b = n / r * 1000; if (e > b) b = e; printf "%.2f", w / b }')x (1.0: the engine adds nothing to the quota)"
goal "(h1) no throttled error reaching a caller: failed attaches, of them throttled = $H1_THROTTLED" "$(awk -v n="$(get '(h1) (h) from one client' n)" -v o="$(get '(h1) (h) from one client' ok)" 'BEGIN { print n - o }')" "v == 0 && $H1_THROTTLED == 0"
echo
echo "bench-unlock, the same code on the host and in this guest (ms per operation; guest/host is what TCG costs):"
for l in "unwrap data key via local KMS" "keyslot check, PBKDF2 1000" "header load of an attach" "volume key check"; do
        h=$(unlock_ms /etc/evs-bench/unlock-host "$l") g=$(unlock_ms $B/unlock-guest "$l")
        printf '  %-44s host %9s  guest %9s  guest/host %s\n' "$l" "${h:-n/a}" "${g:-n/a}" "$(ratio "${g:-0}" "${h:-0}")"
done
echo
hwm=$(awk -F'|' '$6 != "-" && $6 + 0 > m { m = $6 + 0 } END { printf "%.1f", m / 1024 }' $ROWS)
goal "daemon VmHWM < 32 MiB (the most of all phases)" "$hwm MiB" 'v + 0 < 32'
say "total guest time $SECONDS s"
exit 0
