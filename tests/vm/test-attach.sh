#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The attach/detach scenarios of the vm suite, in one boot (run by tests/vm/evs-vm inside the guest).
# Disks: vda=vol-a vdb=vol-b vdc=vol-c vdd=vol-d (serials = volume ids).
set -u

T=/tmp/evs
mkdir -p "$T"
CONF=$T/evs-cryptd.conf
cat >"$CONF" <<CONF
[Daemon]
StateDirectory=/var/lib/evs-cryptd
BusPath=/run/evs-cryptd/bus
SweepIntervalSec=2
CONF
export EVS_BUS=/run/evs-cryptd/bus

. /usr/lib/evs-tests/tap.sh

DPID=
start_daemon() {
        evs-cryptd --config "$CONF" >>"$T/daemon.log" 2>&1 &
        DPID=$!
        i=0
        while [ ! -S /run/evs-cryptd/bus ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        # The socket may be stale from a killed daemon: wait for an answer.
        i=0
        until evsctl status >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
}
sum() { dd if="$1" bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1; }
disksum() { sha256sum "$1" | cut -d' ' -f1; }

start_daemon
head -c 4194304 /dev/urandom >"$T/pattern"
PAT=$(sha256sum "$T/pattern" | cut -d' ' -f1)

echo "# 1. create, attach, write, detach, attach, read back"
expect 0 "create key app1" evsctl key create app1
expect 0 "create vol-a on /dev/vda with app1" evsctl volume create /dev/vda --id vol-a --key app1
expect 0 "attach vol-a" evsctl volume attach vol-a
check "/dev/mapper/evs-vol-a exists" '[ -b /dev/mapper/evs-vol-a ]'
check "write the pattern" 'dd if=$T/pattern of=/dev/mapper/evs-vol-a bs=1M conv=fsync 2>/dev/null'
check "the disk holds ciphertext, not the pattern" '[ "$(dd if=/dev/vda bs=1M skip=16 count=4 2>/dev/null | sha256sum | cut -d" " -f1)" != "$PAT" ]'
expect 0 "attach again is a no-op" evsctl volume attach vol-a
check "and says so" 'echo "$out" | grep -q "already attached"'
expect 0 "detach vol-a" evsctl volume detach vol-a
check "mapping closed" '[ ! -e /dev/mapper/evs-vol-a ]'
expect 0 "re-attach vol-a by device" evsctl volume attach /dev/vda
check "pattern reads back intact" '[ "$(sum /dev/mapper/evs-vol-a)" = "$PAT" ]'
# libcryptsetup hands dm-crypt the volume key through the daemon thread's keyring: it must not stay there.
check "no volume key left in the kernel keyring (/proc/keys)" '! grep -q " logon .*cryptsetup:" /proc/keys'
check "the table names a keyring key, never the key" 'dmsetup table evs-vol-a | grep -q " :64:logon:cryptsetup:"'

echo "# 2. disabling the CMK leaves the open mapping working, blocks the re-attach"
expect 0 "disable app1" evsctl key disable app1
check "open mapping still reads" '[ "$(sum /dev/mapper/evs-vol-a)" = "$PAT" ]'
check "open mapping still writes" 'dd if=$T/pattern of=/dev/mapper/evs-vol-a bs=1M seek=8 conv=fsync 2>/dev/null && [ "$(dd if=/dev/mapper/evs-vol-a bs=1M skip=8 count=4 2>/dev/null | sha256sum | cut -d" " -f1)" = "$PAT" ]'
expect 0 "volume list" evsctl volume list
check "list flags the volume" 'echo "$out" | grep vol-a | grep -q "key disabled: will not re-attach"'
expect 0 "volume show --json" evsctl --json volume show vol-a
check "json: attached, key_state disabled, mapping path" 'echo "$out" | grep -q "\"state\":\"attached\"" && echo "$out" | grep -q "\"key_state\":\"disabled\"" && echo "$out" | grep -q "\"mapping\":\"/dev/mapper/evs-vol-a\""'
check "daemon warned about the key under an open volume" 'grep -q "of open volume vol-a is now disabled" $T/daemon.log'
expect 3 "detach guard: refused, the key is disabled" evsctl volume detach vol-a
check "reason: could not be attached again, key disabled, --force" 'echo "$err" | grep -q "could not be attached again: key .* is disabled.*use --force"'
check "nothing closed" '[ -b /dev/mapper/evs-vol-a ] && [ "$(sum /dev/mapper/evs-vol-a)" = "$PAT" ]'
check "guard refusal logged with its MESSAGE_ID" 'grep -q "MESSAGE_ID=92a9e4d633d045f49ffc0a25ab654bfb EVS_VOLUME_ID=vol-a EVS_RESULT=detach-refused" $T/daemon.log'
expect 0 "detach --force detaches anyway" evsctl volume detach vol-a --force
check "mapping closed" '[ ! -e /dev/mapper/evs-vol-a ]'
check "forced detach logged with its MESSAGE_ID and the last key state" 'grep "MESSAGE_ID=6de6b791f07d4b38a67bc5c66444d83a EVS_VOLUME_ID=vol-a EVS_RESULT=detach-forced" $T/daemon.log | grep -q "last seen disabled"'
expect 3 "attach refused: key disabled" evsctl volume attach vol-a
check "reason names the disabled key" 'echo "$err" | grep -q "is disabled"'
check "nothing opened on refusal" '[ ! -e /dev/mapper/evs-vol-a ]'
check "refusal logged with MESSAGE_ID" 'grep -q "MESSAGE_ID=dc7f4e099cd84e59a063ff0e2c88110c EVS_VOLUME_ID=vol-a EVS_RESULT=refused" $T/daemon.log'
expect 0 "volume list after refusal" evsctl volume list
check "list shows the refusal" 'echo "$out" | grep vol-a | grep -q "is disabled"'
expect 0 "enable app1" evsctl key enable app1
expect 0 "attach works again" evsctl volume attach vol-a
check "data intact" '[ "$(sum /dev/mapper/evs-vol-a)" = "$PAT" ]'
expect 0 "detach vol-a" evsctl volume detach vol-a

echo "# 3. scheduled deletion, cancel, enable"
expect 0 "schedule deletion of app1 in 30 days" evsctl key schedule-deletion app1 --days 30
expect 3 "attach refused: pending deletion" evsctl volume attach vol-a
check "reason gives the date" 'echo "$err" | grep -q "pending deletion on 20[0-9][0-9]-"'
expect 0 "cancel deletion" evsctl key cancel-deletion app1
expect 3 "still refused: the key is disabled" evsctl volume attach vol-a
check "reason says disabled" 'echo "$err" | grep -q "is disabled"'
expect 0 "enable app1" evsctl key enable app1
expect 0 "attach works" evsctl volume attach vol-a
expect 0 "schedule deletion of app1 in 30 days, vol-a attached" evsctl key schedule-deletion app1 --days 30
expect 3 "volume check while attached: an attach after a detach would be refused" evsctl --json volume check vol-a
check "check: attached, still open afterwards" 'echo "$out" | grep -q "\"state\":\"attached\"" && [ -b /dev/mapper/evs-vol-a ]'
check "check: the reason is the pending deletion" 'echo "$out" | grep -q "KeyPendingDeletion"'
expect 3 "detach guard: refused, pending deletion" evsctl volume detach vol-a
check "reason: the deletion date and the days left" 'echo "$err" | grep -q "pending deletion on 20[0-9-]*T[0-9:]*Z (30 days left)"'
check "nothing closed" '[ -b /dev/mapper/evs-vol-a ]'
expect 0 "cancel deletion" evsctl key cancel-deletion app1
expect 0 "enable app1" evsctl key enable app1
KEYFILE=$(grep -l '"app1"' /var/lib/evs-cryptd/keys/*.json | head -1)
cp "$KEYFILE" "$T/keyfile.bak"
echo garbage >"$KEYFILE"
expect 6 "detach guard: refused when the KMS cannot answer for the key" evsctl volume detach vol-a
check "reason: the backend does not answer" 'echo "$err" | grep -q "does not answer for key"'
check "nothing closed" '[ -b /dev/mapper/evs-vol-a ]'
cp "$T/keyfile.bak" "$KEYFILE"
expect 0 "the guard lets an enabled key's volume go" evsctl volume detach vol-a
expect 0 "attach again" evsctl volume attach vol-a

echo "# 4. evs/default"
expect 3 "evs/default cannot be disabled" evsctl key disable evs/default
expect 3 "evs/default cannot be scheduled for deletion" evsctl key schedule-deletion evs/default --days 7
expect 0 "create vol-c on the default key" evsctl volume create /dev/vdc --id vol-c
expect 0 "attach vol-c" evsctl volume attach vol-c
check "write vol-c" 'dd if=$T/pattern of=/dev/mapper/evs-vol-c bs=1M conv=fsync 2>/dev/null'

echo "# 5. the daemon killed with SIGKILL: mappings stay and serve I/O"
kill -KILL "$DPID"; wait "$DPID" 2>/dev/null
check "mappings survive the daemon" 'dmsetup info evs-vol-a >/dev/null 2>&1 && dmsetup info evs-vol-c >/dev/null 2>&1'
check "vol-a still serves reads" '[ "$(sum /dev/mapper/evs-vol-a)" = "$PAT" ]'
check "vol-c still serves reads" '[ "$(sum /dev/mapper/evs-vol-c)" = "$PAT" ]'
check "vol-c still takes writes" 'dd if=$T/pattern of=/dev/mapper/evs-vol-c bs=1M seek=4 conv=fsync 2>/dev/null'
rm -rf /var/lib/evs-cryptd/volumes   # even without its records, the restarted daemon finds them
start_daemon
expect 0 "restarted daemon lists volumes" evsctl --json volume list
check "both listed as attached" '[ "$(echo "$out" | grep -c "\"state\":\"attached\"")" = 2 ]'
check "reconciled at start" 'grep -q "Found open mapping evs-vol-a" $T/daemon.log'

echo "# 6. a token copied from another volume, a flipped bit: refused, disk untouched"
expect 0 "create vol-b on /dev/vdb with app1" evsctl volume create /dev/vdb --id vol-b --key app1
cryptsetup token export --token-id 0 /dev/vda >"$T/tok-a.json"
cryptsetup token remove --token-id 0 /dev/vdb
cryptsetup token import --token-id 0 /dev/vdb <"$T/tok-a.json"
B=$(disksum /dev/vdb)
expect 1 "attach with vol-a's token refused" evsctl volume attach vol-b
check "reason: volume id mismatch" 'echo "$err" | grep -q "volume id mismatch"'
check "nothing opened" '[ ! -e /dev/mapper/evs-vol-b ]'
check "vol-b unchanged by the refusal" '[ "$(disksum /dev/vdb)" = "$B" ]'

expect 0 "create vol-d on /dev/vdd with app1" evsctl volume create /dev/vdd --id vol-d --key app1
cryptsetup token export --token-id 0 /dev/vdd >"$T/tok-d.json"
W=$(sed 's/.*"evs_wrapped_key":"\([^"]*\)".*/\1/' "$T/tok-d.json")
echo "$W" | base64 -d >"$T/wrapped"
# Flip one bit in the ciphertext (past the 40-byte header and the 12-byte nonce).
b=$(dd if="$T/wrapped" bs=1 skip=60 count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$T/wrapped" bs=1 seek=60 conv=notrunc 2>/dev/null
W2=$(base64 -w0 <"$T/wrapped")
sed "s|$W|$W2|" "$T/tok-d.json" >"$T/tok-d2.json"
check "the token was altered" '! cmp -s $T/tok-d.json $T/tok-d2.json'
cryptsetup token remove --token-id 0 /dev/vdd
cryptsetup token import --token-id 0 /dev/vdd <"$T/tok-d2.json"
D=$(disksum /dev/vdd)
expect 1 "attach with a flipped bit refused" evsctl volume attach vol-d
check "reason: fails authentication" 'echo "$err" | grep -q "fails authentication"'
check "nothing opened" '[ ! -e /dev/mapper/evs-vol-d ]'
check "vol-d unchanged by the refusal" '[ "$(disksum /dev/vdd)" = "$D" ]'

echo "# 7. detach of a mapping held open"
sleep 600 </dev/mapper/evs-vol-c &
HOLDER=$!
sleep 0.3
expect 5 "detach refused while in use" evsctl volume detach vol-c
check "reason: in use" 'echo "$err" | grep -q "in use"'
check "still mapped" '[ -b /dev/mapper/evs-vol-c ]'
expect 0 "detach --force defers" evsctl volume detach vol-c --force
check "says deferred" 'echo "$out" | grep -q "will be removed when it is closed"'
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null
i=0; while [ -e /dev/mapper/evs-vol-c ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
check "mapping gone once closed" '! dmsetup info evs-vol-c >/dev/null 2>&1'

echo "# 8. stock cryptsetup unlocks through the evs-kms token plugin (same unlock code)"
PLUGIN=/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-evs-kms.so
if [ -f "$PLUGIN" ]; then
        export EVS_CONFIG=$CONF
        expect 0 "detach vol-a" evsctl volume detach vol-a
        expect 0 "luksDump shows the token through the plugin" cryptsetup luksDump /dev/vda
        check "dump names the backend and volume" 'echo "$out" | grep -q "backend:  local" && echo "$out" | grep -q "volume:   vol-a"'
        expect 0 "cryptsetup open --token-only" cryptsetup open --token-only /dev/vda evs-vol-a
        check "data intact through the plugin" '[ "$(sum /dev/mapper/evs-vol-a)" = "$PAT" ]'
        expect 0 "cryptsetup close" cryptsetup close evs-vol-a
        expect 0 "disable app1" evsctl key disable app1
        expect 1 "the plugin refuses a disabled key too" cryptsetup open --token-only /dev/vda evs-vol-a
        check "its reason names the key state" 'echo "$err" | grep -q "is disabled"'
        expect 0 "enable app1" evsctl key enable app1
        expect 0 "attach vol-a again" evsctl volume attach vol-a
        printf 'bypass-passphrase' >"$T/bypass"
        expect 0 "stock cryptsetup luksAddKey, unlocked through the token" \
                cryptsetup luksAddKey -q --token-only --pbkdf pbkdf2 --pbkdf-force-iterations 1000 /dev/vdc "$T/bypass"
        expect 0 "attach vol-c with a keyslot that bypasses the CMK" evsctl volume attach vol-c
        check "warning logged with its MESSAGE_ID" 'grep -q "MESSAGE_ID=fb2fbd0d1b43424892c5f3e5ef3795fa EVS_VOLUME_ID=vol-c EVS_RESULT=warning.*EVS_KEYSLOTS=1" $T/daemon.log'
        expect 0 "volume list" evsctl volume list
        check "list flags vol-c" 'echo "$out" | grep vol-c | grep -q "1 keyslot not bound to the CMK"'
        expect 0 "detach vol-c" evsctl volume detach vol-c
        echo "# 9. a mapping of another name (crypttab, by hand): recognised by the LUKS UUID"
        expect 0 "cryptsetup open --token-only /dev/vdc as data-c" cryptsetup open --token-only /dev/vdc data-c
        expect 0 "volume show --json vol-c" evsctl --json volume show vol-c
        check "attached as /dev/mapper/data-c, attached_by data-c" 'echo "$out" | grep -q "\"state\":\"attached\"" && echo "$out" | grep -q "\"mapping\":\"/dev/mapper/data-c\"" && echo "$out" | grep -q "\"attached_by\":\"data-c\""'
        expect 0 "attach vol-c: already attached, no second mapping" evsctl volume attach vol-c
        check "says already attached" 'echo "$out" | grep -q "already attached as /dev/mapper/data-c"'
        check "no evs-vol-c opened beside it" '[ ! -e /dev/mapper/evs-vol-c ]'
        mkdir -p /run/systemd/system
        UNIT='systemd-cryptsetup@data\x2dc.service'
        : >"/run/systemd/system/$UNIT"
        expect 0 "volume show with a systemd-cryptsetup@ unit for it" evsctl --json volume show vol-c
        check "attached_by systemd-cryptsetup" 'echo "$out" | grep -q "\"attached_by\":\"systemd-cryptsetup\""'
        expect 5 "detach refused: the unit owns the mapping" evsctl volume detach vol-c
        check "reason names the unit to stop" 'echo "$err" | grep -qF "systemctl stop $UNIT"'
        check "still open" '[ -b /dev/mapper/data-c ]'
        expect 0 "detach --force closes it" evsctl volume detach vol-c --force
        check "closed" '[ ! -e /dev/mapper/data-c ]'
        rm -f "/run/systemd/system/$UNIT"
        echo "# 9b. a mapping stacked on another map of the disk (as on multipath): found through the disk's holders"
        expect 0 "linear map lin-c over /dev/vdc" dmsetup create lin-c --table "0 $(cat /sys/block/vdc/size) linear /dev/vdc 0"
        expect 0 "cryptsetup open /dev/mapper/lin-c as data-l" cryptsetup open --key-file "$T/bypass" /dev/mapper/lin-c data-l
        expect 0 "volume show --json vol-c" evsctl --json volume show vol-c
        check "attached as /dev/mapper/data-l, attached_by data-l" 'echo "$out" | grep -q "\"state\":\"attached\"" && echo "$out" | grep -q "\"mapping\":\"/dev/mapper/data-l\"" && echo "$out" | grep -q "\"attached_by\":\"data-l\""'
        expect 0 "attach vol-c: already attached, no second mapping" evsctl volume attach vol-c
        check "says already attached as data-l" 'echo "$out" | grep -q "already attached as /dev/mapper/data-l"'
        expect 0 "close data-l" cryptsetup close data-l
        expect 0 "remove lin-c" dmsetup remove lin-c
        expect 0 "volume show --json vol-c after" evsctl --json volume show vol-c
        check "detached once closed" 'echo "$out" | grep -q "\"state\":\"detached\""'
        unset EVS_CONFIG
else
        not_ok "token plugin not installed in the guest at $PLUGIN"
fi

kill "$DPID"; wait "$DPID" 2>/dev/null
check "a clean stop leaves vol-a open" 'dmsetup info evs-vol-a >/dev/null 2>&1'
if [ "$failed" != 0 ]; then echo "--- daemon log"; cat "$T/daemon.log"; fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
