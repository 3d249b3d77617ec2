#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The guest side of bench/compare-builds: compare-builds-guest.sh N ROUNDS DELAY [system]. Each round starts one
# daemon (evs-cryptd-base, then evs-cryptd-new; the other way round in even rounds), attaches the N volumes at
# once, measures, detaches them (--force, not measured) and stops it. "system": the systemd + udev guest, where
# the bench's programs are in /opt/evs-bench/bin and the volumes' disk is the one of serial "bench".
set -uo pipefail
n=$1 rounds=$2 delay=$3 system=${4:-}
B=/bench
mkdir -p $B && mount -t tmpfs tmpfs $B
export EVS_BUS=/run/evs-cryptd/bus
disk=/dev/vda
if [ "$system" = system ]; then
        export PATH=/opt/evs-bench/bin:$PATH EVS_BUS=/run/evs-bench/bus # evs-cryptd.socket may own the default path
        disk=$(readlink -f /dev/disk/by-id/virtio-bench)
fi
helper=$(command -v evs-kms-test-helper)
CONF=$B/evs-cryptd.conf
{
        printf '[Daemon]\nStateDirectory=/var/lib/evs-cryptd\nBusPath=%s\nAutoAttach=no\n' "$EVS_BUS"
        printf '[Backend tk]\nType=exec\nHelper=%s\nTimeout=120\nPersistent=yes\n' "$helper"
        printf 'Option.dir=/var/lib/evs-bench-kms\n'
        [ "$delay" -gt 0 ] && printf 'Option.delay=%s\n' "$delay"
} >$CONF
die() { echo "compare-builds: $*" >&2; exit 1; }
evs-bench-run --loop-setup "$disk" $((17 * 1024 * 1024)) "$(wc -l </etc/evs-bench/slots)" || die "no loop devices"
[ "$system" = system ] && udevadm settle -t 120
echo "# guest: $(nproc) vCPU, $([ -e /run/udev/control ] && echo "udev running" || echo "no udev")"
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
# CPU time in clock ticks: the whole guest's (not idle, not iowait) and the daemon's own threads.
cpu_all() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
cpu_daemon() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' /proc/$1/stat; }
# lock_held: the seconds the daemon's jobs held its engine lock so far (`evsctl metrics`; empty for a build without)
lock_held() { evsctl metrics 2>/dev/null | awk '$1 == "evs_engine_lock_hold_seconds_sum" { print $2 }'; }
commands() { # VERB [ARGS]: one evsctl line per volume
        local i
        for ((i = 0; i < n; i++)); do printf 'evsctl volume %s bx-%03d\n' "$*" "$i"; done
}

for ((round = 1; round <= rounds; round++)); do
        order="base new"
        ((round % 2)) || order="new base" # ABBA: neither build always runs second
        for build in $order; do
                evs-cryptd-$build --config $CONF >>$B/daemon-$build.log 2>&1 &
                pid=$!
                for ((i = 0; i < 300; i++)); do evsctl status >/dev/null 2>&1 && break; sleep 0.1; done
                evsctl status >/dev/null 2>&1 || die "evs-cryptd-$build did not answer"
                c0=$(cpu_daemon $pid) a0=$(cpu_all) s=${EPOCHREALTIME/./} l0=$(lock_held)
                commands attach | evs-bench-run --parallel --times $B/times --errors $B/errors >/dev/null
                e=${EPOCHREALTIME/./} c1=$(cpu_daemon $pid) a1=$(cpu_all) l1=$(lock_held)
                mapped=$(dmsetup ls | grep -c '^evs-bx-')
                printf 'round %d %-4s wall %7.1f ms  daemon CPU/attach %5.1f ms  guest CPU/attach %5.1f ms  %d of %d mapped  engine lock held/attach %s ms\n' \
                        "$round" "$build" "$(((e - s) / 100))e-1" "$(((c1 - c0) * 10000 / hz / n))e-1" \
                        "$(((a1 - a0) * 10000 / hz / n))e-1" "$mapped" "$n" \
                        "$(awk -v a="$l0" -v b="$l1" -v n="$n" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.1f", (b - a) * 1000 / n }')" |
                        tee -a $B/rows
                [ "$mapped" = "$n" ] || { sed -n 1,5p $B/errors/* 2>/dev/null; die "evs-cryptd-$build mapped $mapped of $n"; }
                commands detach --force | evs-bench-run --parallel --times $B/times2 --errors $B/errors2 >/dev/null
                kill $pid
                wait $pid 2>/dev/null
                sleep 2 # the removals' deferred kernel work, before the next storm
        done
done
# Medians per build and new/base.
awk '
function median(a, k,   i, j, t) {
        for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
{ k = ++cnt[$3]; wall[$3, k] = $5; dcpu[$3, k] = $9; gcpu[$3, k] = $13; lock[$3, k] = $22 }
END {
        for (b in cnt) {
                for (i = 1; i <= cnt[b]; i++) { w[i] = wall[b, i]; d[i] = dcpu[b, i]; g[i] = gcpu[b, i]; l[i] = lock[b, i] }
                mw[b] = median(w, cnt[b]); md[b] = median(d, cnt[b]); mg[b] = median(g, cnt[b])
                ml[b] = l[1] == "n/a" ? "n/a" : sprintf("%.1f ms", median(l, cnt[b]))
        }
        printf "median engine lock held per attach: base %s, new %s (n/a: a build without evs_engine_lock_* metrics)\n", ml["base"], ml["new"]
        printf "median base: wall %.1f ms, daemon CPU/attach %.1f ms, guest CPU/attach %.1f ms\n", mw["base"], md["base"], mg["base"]
        printf "median new:  wall %.1f ms, daemon CPU/attach %.1f ms, guest CPU/attach %.1f ms\n", mw["new"], md["new"], mg["new"]
        printf "new/base: wall %.2fx, daemon CPU/attach %.2fx, guest CPU/attach %.2fx\n", mw["new"] / mw["base"], md["new"] / md["base"], mg["new"] / mg["base"]
}' $B/rows
