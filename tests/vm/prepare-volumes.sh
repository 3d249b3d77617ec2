#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Formats many small volumes on the host (native speed: a LUKS2 format under TCG takes ~2 s, its 16 MiB keyslot
# area is random data), for a guest that sees them as loop devices over one virtio disk.
#
#   tests/vm/prepare-volumes.sh BUILD_DIR OUT_DIR SPEC...
#     SPEC   local:PREFIX:COUNT:KEY   evs volumes PREFIX-000.. on local CMK KEY (created)
#            exec:PREFIX:COUNT:KEY    evs volumes on CMK KEY of the exec backend "tk" (the test helper)
#            luks:PREFIX:COUNT        plain LUKS2 like evs's (aes-xts-plain64, 512-bit, 4096-byte sectors, PBKDF2
#                                     1000 iterations) opened by the key file OUT_DIR/luks.key
#
# OUT_DIR gets:
#   volumes.img  the volumes back to back, SLOT = 17 MiB each, in SPEC order
#   slots        one line per slot: INDEX VOLUME_ID
#   state/       the daemon's root.key, keys/ and volume records (device /dev/loopINDEX) for the guest's
#                /var/lib/evs-cryptd
#   kms/         the test helper's key store (Option.dir= of backend "tk" in the guest)
#   luks.key     the key file of the luks: volumes
# The guest makes the loop devices with `evs-bench-run --loop-setup /dev/vdX 17825792 COUNT` (loop0 = slot 0).
# Exit status 0, or 1 with a one-line reason.
set -euo pipefail

SLOT=$((17 * 1024 * 1024))
build=$(readlink -f "${1:?usage: prepare-volumes.sh BUILD_DIR OUT_DIR SPEC...}")
out=${2:?usage: prepare-volumes.sh BUILD_DIR OUT_DIR SPEC...}
shift 2
daemon=$build/src/daemon/evs-cryptd evsctl=$build/src/evsctl/evsctl helper=$build/tests/helpers/evs-kms-test-helper
for f in "$daemon" "$evsctl" "$helper"; do
        [[ -x $f ]] || { echo "prepare-volumes: $f is not built" >&2; exit 1; }
done
mkdir -p "$out"
out=$(readlink -f "$out")
# Formatting happens in a tmpfs when there is one (no fsync to a disk), the image goes to OUT_DIR.
work=$(mktemp -d "$( [[ -d /dev/shm && -w /dev/shm ]] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/evs-volumes.XXXXXX")
dpid=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
        if [[ -n $dpid ]]; then
                kill "$dpid" 2>/dev/null || true
                wait "$dpid" 2>/dev/null || true
        fi
        rm -rf "$work"
}
trap cleanup EXIT
fail() {
        echo "prepare-volumes: $*" >&2
        [[ -s $work/daemon.log ]] && tail -n 5 "$work/daemon.log" >&2
        exit 1
}

cat >"$work/conf" <<EOF
[Daemon]
StateDirectory=$work/state
BusPath=$work/bus
AutoAttach=no
[Backend tk]
Type=exec
Helper=$helper
Timeout=30
Option.dir=$out/kms
EOF
rm -rf "$out/state" "$out/kms" "$out/volumes.img" "$out/slots"
head -c 32 /dev/urandom >"$out/luks.key"
"$daemon" --config "$work/conf" >"$work/daemon.log" 2>&1 &
dpid=$!
export EVS_BUS=$work/bus
for _ in $(seq 100); do
        "$evsctl" status >/dev/null 2>&1 && break
        sleep 0.05
done
"$evsctl" status >/dev/null || fail "the host daemon did not start"

: >"$out/volumes.img"
slot=0
declare -A keys=()
for spec in "$@"; do
        IFS=: read -r kind prefix count key <<<"$spec"
        [[ $count =~ ^[0-9]+$ && -n $prefix ]] || fail "bad SPEC $spec"
        case $kind in
        local | exec)
                [[ -n $key ]] || fail "SPEC $spec names no key"
                ref=$key
                [[ $kind == exec ]] && ref=tk:$key
                if [[ -z ${keys[$ref]:-} ]]; then
                        if [[ $kind == exec ]]; then
                                "$evsctl" key create --backend tk "$key" >/dev/null || fail "key create $ref failed"
                        else
                                "$evsctl" key create "$key" >/dev/null || fail "key create $key failed"
                        fi
                        keys[$ref]=1
                fi
                ;;
        luks) ;;
        *) fail "bad SPEC kind in $spec" ;;
        esac
        for ((i = 0; i < count; i++)); do
                id=$(printf '%s-%03d' "$prefix" "$i")
                img=$work/$id.img
                truncate -s "$SLOT" "$img"
                if [[ $kind == luks ]]; then
                        cryptsetup luksFormat -q --type luks2 --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 \
                                --pbkdf pbkdf2 --hash sha256 --pbkdf-force-iterations 1000 --label "$id" \
                                --key-file "$out/luks.key" "$img" >/dev/null || fail "luksFormat $id failed"
                else
                        "$evsctl" volume create "$img" --id "$id" --key "$ref" >/dev/null 2>"$work/err" ||
                                fail "volume create $id failed: $(cat "$work/err")"
                fi
                cat "$img" >>"$out/volumes.img"
                rm -f "$img"
                echo "$slot $id" >>"$out/slots"
                if [[ $kind != luks ]]; then
                        sed -i "s|\"device\": *\"[^\"]*\"|\"device\":\"/dev/loop$slot\"|" "$work/state/volumes/$id.json"
                fi
                slot=$((slot + 1))
        done
done
kill "$dpid"
wait "$dpid" 2>/dev/null || true
dpid=
mkdir -p "$out/state"
chmod 0700 "$out/state"
for f in root.key keys volumes; do
        if [[ -e $work/state/$f ]]; then cp -a "$work/state/$f" "$out/state/"; fi
done
mkdir -p "$out/kms"
rm -f "$out"/kms/.lock "$out"/kms/.rate "$out"/kms/.throttle-*
exit 0
