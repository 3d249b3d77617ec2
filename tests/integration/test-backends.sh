#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The daemon with three backends side by side: local, pkcs11 (a SoftHSM2 token of the test's own) and
# exec (a helper the tests provide), driven by evsctl. Run through softhsm-env.sh:
#   softhsm-env.sh test-backends.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST EXEC_HELPER
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3") HELPER=$(readlink -f "$4")
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup is not installed"; exit 77; }
/usr/bin/python3 -c 'import cryptography' 2>/dev/null || { echo "SKIP: python3-cryptography is not installed"; exit 77; }

T=$(mktemp -d /tmp/evs-backends.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
mkdir -p "$T/extkeys"

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/bus

[Backend hsm]
Type=pkcs11
Module=$EVS_TEST_P11_MODULE
TokenLabel=$EVS_TEST_P11_TOKEN
PinFile=$EVS_TEST_P11_PINFILE

[Backend ext]
Type=exec
Helper=$HELPER
Timeout=5
Option.dir=$T/extkeys
Option.down-file=$T/ext-down
CONF
"$DAEMON" --config "$T/evs-cryptd.conf" 2>"$T/daemon.log" &
PID=$!
for _ in $(seq 100); do [ -S "$T/bus" ] && break; sleep 0.05; done
export EVS_BUS=$T/bus

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
opens() { "$UNWRAP" "$T/evs-cryptd.conf" "$1" 2>/dev/null | cryptsetup open --test-passphrase --key-file=- "$1" 2>/dev/null; }

for b in hsm ext local; do
        echo "# backend $b"
        expect 0 "$b: create a key" -- "$EVSCTL" --json key create "k-$b" --backend "$b"
        check "$b: enabled, on $b" 'grep -q "\"state\":\"enabled\"" <<<"$out" && grep -q "\"backend\":\"$b\"" <<<"$out"'
        truncate -s 32M "$T/$b.img"
        expect 0 "$b: create a volume on it" -- "$EVSCTL" volume create "$T/$b.img" --id "vol-$b" --key "$b:k-$b"
        check "$b: the token records the backend" 'cryptsetup token export --token-id 0 "$T/$b.img" | grep -q "\"evs_backend\":\"$b\""'
        check "$b: the keyslot opens with the key unwrapped on the host" 'opens "$T/$b.img"'
        [ "$b" = local ] && continue
        expect 0 "$b: disable the key" -- "$EVSCTL" --json key disable "$b:k-$b"
        check "$b: state disabled" 'grep -q "\"state\":\"disabled\"" <<<"$out"'
        check "$b: unwrap refused after disable" '! opens "$T/$b.img"'
        truncate -s 32M "$T/$b-2.img"
        expect 3 "$b: a new volume on a disabled key is refused" -- "$EVSCTL" volume create "$T/$b-2.img" --id "vol-$b-2" --key "$b:k-$b"
        expect 0 "$b: enable the key" -- "$EVSCTL" key enable "$b:k-$b"
        check "$b: unwrap works again" 'opens "$T/$b.img"'
        if [ "$b" = hsm ]; then
                expect 1 "$b: PKCS#11 has no scheduled deletion, and it says so" -- "$EVSCTL" key schedule-deletion "$b:k-$b" --days 7
                check "$b: reason says not supported" 'grep -qi "support\|no scheduled" <<<"$err"'
        else
                expect 0 "$b: the helper's KMS schedules deletion" -- "$EVSCTL" --json key schedule-deletion "$b:k-$b" --days 7
                check "$b: pending-deletion" 'grep -q "\"state\":\"pending-deletion\"" <<<"$out"'
                check "$b: unwrap refused while pending deletion" '! opens "$T/$b.img"'
                expect 0 "$b: cancel" -- "$EVSCTL" key cancel-deletion "$b:k-$b"
                expect 0 "$b: enable" -- "$EVSCTL" key enable "$b:k-$b"
                check "$b: unwrap works again" 'opens "$T/$b.img"'
        fi
done

echo "# the exec backend's KMS down, then back"
touch "$T/ext-down"
t0=$(date +%s)
expect 6 "ext: KMS down: a new volume is refused as unavailable" -- "$EVSCTL" volume create "$T/ext-2.img" --id vol-ext-2 --key ext:k-ext
check "ext: within the helper's timeout" '[ $(( $(date +%s) - t0 )) -le 6 ]'
check "ext: reason says unavailable" 'grep -qi "unavailable\|down" <<<"$err"'
check "ext: unwrap refused while down" '! opens "$T/ext.img"'
rm -f "$T/ext-down"
check "ext: unwrap works once it is back" 'opens "$T/ext.img"'

echo "# side by side"
expect 0 "key list shows every backend" -- "$EVSCTL" --json key list
check "keys of local, hsm and ext" 'for b in local hsm ext; do grep -q "\"backend\":\"$b\"" <<<"$out" || exit 1; done'
expect 0 "volume list shows volumes of every backend" -- "$EVSCTL" --json volume list
check "volumes on hsm, ext and local" 'for b in local hsm ext; do grep -q "\"backend\":\"$b\"" <<<"$out" || exit 1; done'
expect 4 "an unknown backend is a clear error" -- "$EVSCTL" key create x --backend nosuch
check "reason names it" 'grep -q "nosuch" <<<"$err"'

kill "$PID"; wait "$PID"; PID=
[ "$failed" = 0 ] || { echo "--- daemon log"; cat "$T/daemon.log"; }
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
