#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host fault suite: evs-cryptd is SIGKILLed at random points of volume create, key writes, rewrap and image
# import, each repeated (EVS_FAULT_RUNS, default 25), and after each kill the daemon is restarted and the
# state checked: the store loads, nothing half-made is reported as done, every volume on a disk opens with
# its token (its keyslot with the data key unwrapped through the KMS), and a retry of the interrupted
# operation succeeds without --force. Volumes are image files; attach and detach under SIGKILL are in the
# vm suite (tests/vm/test-faults.sh).
#   test-faults.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3")
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup is not installed"; exit 77; }
RUNS=${EVS_FAULT_RUNS:-25}

T=$(mktemp -d /tmp/evs-faults.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/bus
CONF
export EVS_BUS=$T/bus

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
jq_() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$@"; }

start_daemon() {
        "$DAEMON" --config "$T/evs-cryptd.conf" 2>>"$T/daemon.log" &
        PID=$!
        for _ in $(seq 200); do "$EVSCTL" status >/dev/null 2>&1 && return 0; sleep 0.02; done
        echo "# the daemon did not come up"
        return 1
}
kill_daemon() { kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=; }
# calibrate COMMAND...: runs COMMAND once uninterrupted and prints 1.25 times its duration in milliseconds: the
# first window the kills of that operation land in.
calibrate() {
        local t0 t1
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || echo "# calibration run failed: $*" >&2
        t1=$(date +%s%N)
        echo $(((t1 - t0) * 5 / 4 / 1000000 + 5))
}
# The kill lands at a random point of [window/3, window]; the window then follows the operation's real
# duration on this machine (it varies with the load): shorter after a run that finished before the kill,
# longer after one killed before it wrote anything. So the kills cluster around the operation's writes,
# the points where a crash can tear something.
adapt() {
        case $1 in
        finished) window=$((window * 9 / 10 + 1)) ;;
        early) window=$((window * 23 / 20 + 1)) ;;
        esac
}

# run_killed MAX_MS COMMAND...: starts COMMAND (an evsctl call), SIGKILLs the daemon after a random delay,
# restarts it; the command's exit code is left in $rc.
run_killed() {
        local max=$1
        shift
        "$@" >"$T/client.out" 2>"$T/client.err" &
        local client=$!
        local ms=$((max / 3 + RANDOM % (max * 2 / 3 + 1)))
        sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
        kill_daemon
        wait "$client"
        rc=$?
        start_daemon
}

# The store loads: every list verb answers.
store_loads() {
        local v
        for v in "key list" "volume list" "image list" "server list" "as-config list"; do
                # shellcheck disable=SC2086
                "$EVSCTL" --json $v >/dev/null 2>>"$T/store.err" || { echo "# $v failed: $(tail -1 "$T/store.err")"; return 1; }
        done
}
# A disk is either no LUKS2 volume at all, or a complete EVS volume: an evs-kms token whose data key opens
# its keyslot.
opens() { "$UNWRAP" "$T/evs-cryptd.conf" "$1" 2>/dev/null | cryptsetup open --test-passphrase --key-file=- "$1" 2>/dev/null; }
whole_or_nothing() {
        cryptsetup isLuks "$1" 2>/dev/null || return 0
        opens "$1"
}

start_daemon || exit 1
expect 0 "key a" -- "$EVSCTL" key create a
expect 0 "key b" -- "$EVSCTL" key create b

# --- volume create ---
truncate -s 32M "$T/cal.img"
window=$(calibrate "$EVSCTL" volume create "$T/cal.img" --id cal --key a)
echo "# volume create: kills spread over ${window} ms"
bad=0 done_=0 none=0 half=0 retried=0
for i in $(seq "$RUNS"); do
        img=$T/c$i.img
        truncate -s 32M "$img"
        run_killed "$window" "$EVSCTL" volume create "$img" --id "c$i" --key a
        if [ "$rc" = 0 ]; then adapt finished; elif ! cryptsetup isLuks "$img"; then adapt early; fi
        if ! store_loads; then bad=$((bad + 1)); echo "# create $i: the store does not load"; continue; fi
        if ! whole_or_nothing "$img"; then
                bad=$((bad + 1)); half=$((half + 1))
                echo "# create $i: a LUKS2 disk that its token does not open: $(cryptsetup luksDump "$img" 2>&1 | grep -A3 '^Tokens')"
                continue
        fi
        if [ "$rc" = 0 ]; then
                done_=$((done_ + 1))
                "$EVSCTL" volume show "c$i" >/dev/null 2>&1 && cryptsetup isLuks "$img" ||
                        { bad=$((bad + 1)); echo "# create $i: reported done, but the volume is not there"; }
                continue
        fi
        cryptsetup isLuks "$img" || none=$((none + 1))
        # Interrupted: the same create again, without --force, finishes the job (or finds it done).
        if "$EVSCTL" volume create "$img" --id "c$i" --key a >/dev/null 2>"$T/retry.err"; then
                retried=$((retried + 1))
        elif ! grep -q "LUKS" "$T/retry.err" || ! opens "$img"; then
                bad=$((bad + 1)); echo "# create $i: the retry failed: $(cat "$T/retry.err")"
                continue
        fi
        opens "$img" || { bad=$((bad + 1)); echo "# create $i: after the retry the volume does not open"; }
done
echo "# create: $RUNS kills (last window ${window} ms); $done_ finished before the kill, $none left no LUKS2 header, $retried retried without --force"
check "volume create: $RUNS SIGKILLs, never a LUKS2 disk without its token, retries work" '[ "$bad" = 0 ]'

# --- key writes: create, disable, enable ---
window=$(calibrate "$EVSCTL" key create cal)
echo "# key writes: kills spread over ${window} ms"
bad=0
for i in $(seq "$RUNS"); do
        case $((i % 3)) in
        0) run_killed "$window" "$EVSCTL" key create "k$i" --description "key $i"; want="k$i:enabled" ;;
        1) run_killed "$window" "$EVSCTL" key disable a; want="a:disabled" ;;
        2) run_killed "$window" "$EVSCTL" key enable a; want="a:enabled" ;;
        esac
        [ "$rc" = 0 ] && adapt finished || adapt early
        if ! store_loads; then bad=$((bad + 1)); echo "# key $i: the store does not load"; continue; fi
        list=$("$EVSCTL" --json key list)
        # Every key once, each file a whole key: no duplicates, no half-written key files left behind as keys.
        if [ "$(jq_ 'len(d) == len(set(k["id"] for k in d)) and all(k["state"] in ("enabled","disabled") for k in d)' <<<"$list")" != True ]; then
                bad=$((bad + 1)); echo "# key $i: the key list is inconsistent: $list"
        fi
        if [ "$rc" = 0 ]; then
                state=$("$EVSCTL" --json key show "${want%%:*}" | jq_ 'd["state"]')
                [ "$state" = "${want##*:}" ] || { bad=$((bad + 1)); echo "# key $i: reported done, but ${want%%:*} is $state"; }
        fi
done
"$EVSCTL" key enable a >/dev/null 2>&1
check "key writes: $RUNS SIGKILLs, the store loads, every key whole, what was reported done is done" '[ "$bad" = 0 ]'
echo "# key writes: $(find "$T/state/keys" -type f -name ".#*" | wc -l) temporary files of interrupted writes left (never read as keys)"

# --- volume rewrap ---
truncate -s 32M "$T/r.img"
expect 0 "volume r for the rewraps" -- "$EVSCTL" volume create "$T/r.img" --id r --key a
window=$(calibrate "$EVSCTL" volume rewrap r --key b)
echo "# volume rewrap: kills spread over ${window} ms"
bad=0 target=a
for i in $(seq "$RUNS"); do
        run_killed "$window" "$EVSCTL" volume rewrap r --key "$target"
        [ "$rc" = 0 ] && adapt finished || adapt early
        if ! store_loads; then bad=$((bad + 1)); echo "# rewrap $i: the store does not load"; continue; fi
        opens "$T/r.img" || { bad=$((bad + 1)); echo "# rewrap $i: the volume no longer opens"; }
        key=$("$EVSCTL" --json volume show r | jq_ 'd["key_alias"]')
        if [ "$rc" = 0 ] && [ "$key" != "$target" ]; then
                bad=$((bad + 1)); echo "# rewrap $i: reported done, but the volume is on key $key"
        fi
        # An interrupted rewrap is finished by running it again.
        "$EVSCTL" volume rewrap r --key "$target" >/dev/null 2>"$T/retry.err" ||
                { bad=$((bad + 1)); echo "# rewrap $i: the retry failed: $(cat "$T/retry.err")"; }
        [ "$(cryptsetup luksDump "$T/r.img" | grep -c 'evs-kms')" = 1 ] ||
                { bad=$((bad + 1)); echo "# rewrap $i: after the retry the volume has not exactly one token"; }
        [ "$target" = b ] && target=a || target=b
done
check "volume rewrap: $RUNS SIGKILLs, the volume always opens, a retry finishes it" '[ "$bad" = 0 ]'

# --- image import ---
head -c $((8 * 1024 * 1024)) /dev/urandom >"$T/src.raw"
window=$(calibrate "$EVSCTL" image import "$T/src.raw" --name cal --key b)
echo "# image import: kills spread over ${window} ms"
bad=0
for i in $(seq "$RUNS"); do
        run_killed "$window" "$EVSCTL" image import "$T/src.raw" --name "im$i" --key b
        [ "$rc" = 0 ] && adapt finished || adapt early
        if ! store_loads; then bad=$((bad + 1)); echo "# import $i: the store does not load"; continue; fi
        listed=$("$EVSCTL" --json image list | jq_ '" ".join(im["name"] for im in d)')
        if [ "$rc" = 0 ] && [[ " $listed " != *" im$i "* ]]; then
                bad=$((bad + 1)); echo "# import $i: reported done, but not listed"
        fi
        if [[ " $listed " != *" im$i "* ]]; then
                "$EVSCTL" image import "$T/src.raw" --name "im$i" --key b >/dev/null 2>"$T/retry.err" ||
                        { bad=$((bad + 1)); echo "# import $i: the retry failed: $(cat "$T/retry.err")"; }
        fi
done
# Every image listed is whole: its file opens with its token.
for id in $("$EVSCTL" --json image list | jq_ '" ".join(im["id"] for im in d)'); do
        opens "$T/state/images/$id.img" || { bad=$((bad + 1)); echo "# image $id is listed but its file does not open"; }
done
n=$("$EVSCTL" --json image list | jq_ 'len(d)')
check "image import: $RUNS SIGKILLs, every image listed once and whole" '[ "$bad" = 0 ] && [ "$n" = $((RUNS + 1)) ]'
echo "# image import: $(find "$T/state/images" -type f ! -name "*.json" | wc -l) files for $n images (the others: interrupted imports, never listed)"

check "the daemon's log reports no corrupt state" '! grep -qi "corrupt\|cannot parse\|malformed" "$T/daemon.log"'
tap_done
