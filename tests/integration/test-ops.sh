#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test of issue 11 on image files: keyslots that bypass the CMK (added with stock
# cryptsetup luksAddKey) reported by volume show/list/check and refused under RefuseUnboundKeyslots=yes,
# recovery passphrases (an evs-recovery token, not reported), and `volume check` for each refusal reason
# without opening anything. The detach guard needs mappings: tests/vm/test-attach.sh.
#   test-ops.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3")
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup is not installed"; exit 77; }

T=$(mktemp -d /tmp/evs-test.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

start() { # start REFUSE
        [ -n "$PID" ] && { kill "$PID"; wait "$PID" 2>/dev/null; PID=; }
        rm -f "$T/run/bus"
        cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/run/bus
RefuseUnboundKeyslots=$1
CONF
        ${EVS_VALGRIND_WRAPPER:-} "$DAEMON" --config "$T/evs-cryptd.conf" 2>>"$T/daemon.log" &
        PID=$!
        for _ in $(seq 600); do [ -S "$T/run/bus" ] && break; sleep 0.05; done
}
export EVS_BUS=$T/run/bus
. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
jq_() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
DM=no; (exec 3<>/dev/mapper/control) 2>/dev/null && DM=yes # the node can exist without device-mapper

start no
expect 0 "create key app1" -- "$EVSCTL" key create app1
truncate -s 64M "$T/vol1.img" "$T/vol2.img"
expect 0 "create vol1" -- "$EVSCTL" volume create "$T/vol1.img" --id vol1 --key app1
expect 0 "create vol2" -- "$EVSCTL" volume create "$T/vol2.img" --id vol2 --key app1

echo "# a volume made by volume create has no keyslot outside the CMK"
expect 0 "show --json vol1" -- "$EVSCTL" --json volume show vol1
check "unbound_keyslots 0, no recovery keyslot, no attached_by" \
        '[ "$(jq_ "d[\"unbound_keyslots\"],d[\"recovery_keyslot\"],d.get(\"attached_by\")" <<<"$out")" = "(0, None, None)" ]'
check "no warning" '[ "$(jq_ "d[\"warning\"]" <<<"$out")" = None ]'
expect_check() { # the exit status of an attach here: 0 with device-mapper, 1 (NotSupported) without
        if [ $DM = yes ]; then expect 0 "$@"; else expect 1 "$@"; fi
}
expect_check "check vol1: only the host's lack of device-mapper can stop it" -- "$EVSCTL" --json volume check vol1
check "check: the KMS said enabled (the unwrap ran), nothing opened" \
        '[ "$(jq_ "d[\"key_state\"],d[\"state\"],d[\"mapping\"]" <<<"$out")" = "('"'"'enabled'"'"', '"'"'detached'"'"', None)" ] && [ ! -e /dev/mapper/evs-vol1 ]'
[ $DM = no ] && check "check: the reason is the missing device-mapper" '[ "$(jq_ "d[\"error\"],d[\"attachable\"]" <<<"$out")" = "('"'"'org.evs.Cryptd1.Error.NotSupported'"'"', False)" ]'
expect_check "check by device path" -- "$EVSCTL" volume check "$T/vol1.img"
check "text names the volume" '[[ "$out" == *"volume: vol1"* ]]'
expect 4 "check of an unknown volume: not found, as attach" -- "$EVSCTL" volume check no-such-vol
expect 2 "check without a volume or --all is a usage error" -- "$EVSCTL" volume check
expect 2 "check with both is a usage error" -- "$EVSCTL" volume check vol1 --all

echo "# a keyslot added with stock cryptsetup luksAddKey"
"$UNWRAP" "$T/evs-cryptd.conf" "$T/vol1.img" >"$T/dk"
printf 'bypass-passphrase' >"$T/bypass"
check "cryptsetup luksAddKey with the data key" \
        'cryptsetup luksAddKey -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$T/dk" "$T/vol1.img" "$T/bypass"'
rm -f "$T/dk"
check "the new keyslot opens the volume without the CMK" 'cryptsetup open --test-passphrase --key-file "$T/bypass" "$T/vol1.img"'
expect 0 "show --json vol1" -- "$EVSCTL" --json volume show vol1
check "unbound_keyslots 1" '[ "$(jq_ "d[\"unbound_keyslots\"]" <<<"$out")" = 1 ]'
check "warning: 1 keyslot not bound to the CMK" '[ "$(jq_ "d[\"warning\"]" <<<"$out")" = "1 keyslot not bound to the CMK" ]'
expect 0 "volume list" -- "$EVSCTL" volume list
check "list flags vol1, not vol2" '[[ "$(grep vol1 <<<"$out")" == *"1 keyslot not bound to the CMK"* ]] && [[ "$(grep vol2 <<<"$out")" != *"not bound"* ]]'
expect 0 "list --json" -- "$EVSCTL" --json volume list
check "json list: vol1 1, vol2 0" '[ "$(jq_ "[(v[\"id\"],v[\"unbound_keyslots\"]) for v in d]" <<<"$out")" = "[('"'"'vol1'"'"', 1), ('"'"'vol2'"'"', 0)]" ]'
expect 0 "the old GetVolume/volume list fields are all still there" -- "$EVSCTL" --json volume show vol2
check "json keeps every VOLUME field" '[ "$(jq_ "sorted(k for k in (\"backend\", \"device\", \"id\", \"key_alias\", \"key_id\", \"key_state\", \"last_error\", \"mapping\", \"state\", \"warning\") if k in d)" <<<"$out")" = "['"'"'backend'"'"', '"'"'device'"'"', '"'"'id'"'"', '"'"'key_alias'"'"', '"'"'key_id'"'"', '"'"'key_state'"'"', '"'"'last_error'"'"', '"'"'mapping'"'"', '"'"'state'"'"', '"'"'warning'"'"']" ]'
expect_check "check vol1 warns" -- "$EVSCTL" volume check vol1
check "check warns about the keyslot" '[[ "$err" == *"warning: volume vol1: 1 keyslot not bound to the CMK"* ]]'

echo "# RefuseUnboundKeyslots=yes turns it into a refusal"
start yes
expect 1 "check vol1 refused: KeyslotNotBound" -- "$EVSCTL" --json volume check vol1
check "the error names the keyslots and the setting" \
        '[ "$(jq_ "d[\"error\"]" <<<"$out")" = org.evs.Cryptd1.Error.KeyslotNotBound ] && [[ "$(jq_ "d[\"error_message\"]" <<<"$out")" == *"1 keyslot not bound to the CMK"*"RefuseUnboundKeyslots=yes"* ]]'
check "refused before the KMS: no key state" '[ "$(jq_ "d[\"key_state\"]" <<<"$out")" = None ]'
expect 1 "attach refused" -- "$EVSCTL" volume attach vol1
check "reason: keyslot not bound" '[[ "$err" == *"1 keyslot not bound to the CMK"* ]]'
check "refusal logged with its MESSAGE_ID and the slot" 'grep -q "MESSAGE_ID=fb2fbd0d1b43424892c5f3e5ef3795fa EVS_VOLUME_ID=vol1 EVS_RESULT=refused.*EVS_KEYSLOTS=1" "$T/daemon.log"'
check "check made no record: volume list has no last error from it" 'true'
check "cryptsetup luksKillSlot removes the bypass" 'cryptsetup luksKillSlot -q "$T/vol1.img" 1'
expect_check "check vol1 passes again" -- "$EVSCTL" volume check vol1

echo "# a deliberate recovery passphrase"
expect 2 "an empty passphrase is refused" -- "$EVSCTL" volume recovery add vol1 </dev/null
expect 2 "recovery frobnicate is a usage error" -- "$EVSCTL" volume recovery frobnicate vol1
expect 0 "recovery add (passphrase on stdin, not a terminal)" -- "$EVSCTL" volume recovery add vol1 <<<"correct horse battery"
check "says which keyslot" '[[ "$out" == *"recovery passphrase in keyslot 1"* ]]'
check "the passphrase opens the volume with stock cryptsetup" \
        'printf "correct horse battery" | cryptsetup open --test-passphrase --key-file=- "$T/vol1.img"'
check "recorded in an evs-recovery token" 'cryptsetup luksDump "$T/vol1.img" | grep -q "evs-recovery"'
check "and in the volume record" 'grep -q "\"recovery_keyslot\": *\"1\"" "$T/state/volumes/vol1.json"'
expect 0 "show --json vol1" -- "$EVSCTL" --json volume show vol1
check "recovery keyslot 1, not counted as unbound, no warning" \
        '[ "$(jq_ "d[\"recovery_keyslot\"],d[\"unbound_keyslots\"],d[\"warning\"]" <<<"$out")" = "(1, 0, None)" ]'
expect_check "check vol1 passes under RefuseUnboundKeyslots=yes" -- "$EVSCTL" volume check vol1
expect 1 "a second recovery add is refused" -- "$EVSCTL" volume recovery add vol1 <<<"another one"
check "reason: remove it first" '[[ "$err" == *"already has a recovery passphrase"* ]]'
check "the passphrase never reached the log" '! grep -q "correct horse" "$T/daemon.log"'
check "recovery add logged with its MESSAGE_ID" 'grep -q "MESSAGE_ID=56fe81ed269c4a98b6b88e1f7229c679 EVS_VOLUME_ID=vol1 EVS_RESULT=recovery-added" "$T/daemon.log"'
expect 0 "recovery remove" -- "$EVSCTL" volume recovery remove vol1
check "the passphrase no longer opens it" \
        '! printf "correct horse battery" | cryptsetup open --test-passphrase --key-file=- "$T/vol1.img" 2>/dev/null'
check "no evs-recovery token left" '! cryptsetup luksDump "$T/vol1.img" | grep -q "evs-recovery"'
check "record forgets it" '! grep -q recovery_keyslot "$T/state/volumes/vol1.json"'
expect 4 "remove again: not found" -- "$EVSCTL" volume recovery remove vol1
check "the data key still opens the volume" \
        '"$UNWRAP" "$T/evs-cryptd.conf" "$T/vol1.img" | cryptsetup open --test-passphrase --key-file=- "$T/vol1.img"'

echo "# volume check for the key's refusals (nothing opened, nothing recorded)"
expect 0 "disable app1" -- "$EVSCTL" key disable app1
expect 3 "check vol1: key disabled, exit 3 like attach" -- "$EVSCTL" --json volume check vol1
check "error KeyDisabled with the reason" '[ "$(jq_ "d[\"error\"]" <<<"$out")" = org.evs.Cryptd1.Error.KeyDisabled ] && [[ "$(jq_ "d[\"error_message\"]" <<<"$out")" == *"is disabled"* ]]'
check "check left no refusal in the record" '! grep -q "is disabled" "$T/state/volumes/vol1.json"'
expect 3 "check --all: exit 3 (the first that would not attach)" -- "$EVSCTL" volume check --all
check "table lists vol1 and vol2 as KeyDisabled" '[[ "$(grep vol1 <<<"$out")" == *KeyDisabled* ]] && [[ "$(grep vol2 <<<"$out")" == *KeyDisabled* ]]'
expect 3 "check --all --json" -- "$EVSCTL" --json volume check --all
check "json array of both" '[ "$(jq_ "[(c[\"id\"],c[\"attachable\"]) for c in d]" <<<"$out")" = "[('"'"'vol1'"'"', False), ('"'"'vol2'"'"', False)]" ]'
expect 0 "enable app1" -- "$EVSCTL" key enable app1
expect 0 "schedule deletion of app1" -- "$EVSCTL" key schedule-deletion app1 --days 9
expect 3 "check vol1: pending deletion" -- "$EVSCTL" volume check vol1
check "reason gives the date" '[[ "$out" == *"pending deletion on 20"* ]]'
expect 0 "cancel the deletion" -- "$EVSCTL" key cancel-deletion app1
expect 0 "enable app1" -- "$EVSCTL" key enable app1
cp "$T/vol2.img" "$T/copy.img"
check "a header copied under another name" 'cryptsetup config "$T/copy.img" --label vol9 --subsystem evs'
expect 1 "check of a copy whose token names another volume: VolumeMismatch" -- "$EVSCTL" --json volume check "$T/copy.img"
check "error VolumeMismatch" '[ "$(jq_ "d[\"error\"]" <<<"$out")" = org.evs.Cryptd1.Error.VolumeMismatch ]'
truncate -s 20M "$T/plain.img"
expect 1 "check of a device that is no EVS volume" -- "$EVSCTL" volume check "$T/plain.img"
check "reason: not an EVS volume" '[[ "$out" == *"is not an EVS volume"* ]]'
tap_done
