#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test of CMK rotation on the kmip backend (issue 12): rotation is KMIP ReKey, run against
# PyKMIP's server with the ReKey operation added (kmip-server.sh --rekey runs this script). Volumes wrapped
# before and after a rotation both open their keyslots (unwrap follows the Replacement Object Links to the
# version each token names), rewrap --latest moves a token to the newest version, a disabled key refuses every
# version. Volumes are image files checked with cryptsetup --test-passphrase (no device-mapper here).
#   kmip-server.sh --rekey test-rotation-kmip.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3")
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup is not installed"; exit 77; }
: "${EVS_TEST_KMIP_DIR:?run me through kmip-server.sh --rekey}" "${EVS_TEST_KMIP_PORT:?}" "${EVS_TEST_KMIP_SCRIPT:?}"
KD=$EVS_TEST_KMIP_DIR

T=$(mktemp -d /tmp/evs-rotk.XXXXXX)
chmod 0755 "$T"
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/run/bus

[Backend kmip]
Type=kmip
Host=127.0.0.1
Port=$EVS_TEST_KMIP_PORT
CAFile=$KD/ca.pem
CertificateFile=$KD/client.pem
KeyFile=$KD/client.key
CONF
${EVS_VALGRIND_WRAPPER:-} "$DAEMON" --config "$T/evs-cryptd.conf" 2>>"$T/daemon.log" &
PID=$!
for _ in $(seq 600); do [ -S "$T/run/bus" ] && break; sleep 0.05; done
export EVS_BUS=$T/run/bus

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
jq_() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
opens() { "$UNWRAP" "$T/evs-cryptd.conf" "$1" | cryptsetup open --test-passphrase --key-file=- "$1"; }
token() { # field $2 of the evs-kms token of volume $1
        local id
        id=$(cryptsetup luksDump "$1" | sed -n 's/^ *\([0-9]*\): evs-kms$/\1/p' | head -1)
        cryptsetup token export --token-id "$id" "$1" | jq_ "d.get('$2')"
}
server_state() { "$EVS_TEST_KMIP_SCRIPT" --state "$KD" "$1"; }

expect 0 "create key kmip:app-rot" -- "$EVSCTL" --json key create app-rot --backend kmip
KEY=$(jq_ 'd["id"]' <<<"$out")
check "a new KMIP key is version 1" '[ "$(jq_ "d[\"version\"],d[\"rotated\"]" <<<"$out")" = "(1, None)" ]'

truncate -s 32M "$T/v1.img" "$T/v2.img"
expect 0 "volume v1 under version 1" -- "$EVSCTL" volume create "$T/v1.img" --id v1 --key kmip:app-rot
check "v1's token: key $KEY, version 1" '[ "$(token "$T/v1.img" evs_key_version)" = 1 ] && [ "$(token "$T/v1.img" evs_key_id)" = "$KEY" ]'
check "v1 opens its keyslot" 'opens "$T/v1.img"'

# A token written before KMIP keys had versions has no evs_key_version; its wrapped key names the key itself.
truncate -s 32M "$T/v0.img"
expect 0 "volume v0 under version 1" -- "$EVSCTL" volume create "$T/v0.img" --id v0 --key kmip:app-rot
tid=$(cryptsetup luksDump "$T/v0.img" | sed -n 's/^ *\([0-9]*\): evs-kms$/\1/p' | head -1)
cryptsetup token export --token-id "$tid" "$T/v0.img" |
        /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("evs_key_version"); print(json.dumps(d))' >"$T/v0.json"
check "v0's token rewritten without evs_key_version (as an older release wrote it)" \
        'cryptsetup token import --token-id "$tid" --token-replace --json-file "$T/v0.json" "$T/v0.img" && [ "$(token "$T/v0.img" evs_key_version)" = None ]'
check "v0 opens its keyslot" 'opens "$T/v0.img"'

expect 0 "rotate kmip:app-rot (ReKey)" -- "$EVSCTL" --json key rotate kmip:app-rot
check "same key id, version 2, a rotation date" \
        '[ "$(jq_ "d[\"id\"],d[\"version\"],d[\"rotated\"] is not None" <<<"$out")" = "('"'"'$KEY'"'"', 2, True)" ]'
expect 0 "key show (text)" -- "$EVSCTL" key show kmip:app-rot
check "key show reports version 2" 'grep -q "version: 2$" <<<"$out"'
expect 0 "key list --json" -- "$EVSCTL" --json key list
check "the list has the key once, not its replacement key (version 2)" \
        '[ "$(jq_ "[k[\"id\"] for k in d if k[\"backend\"] == \"kmip\"]" <<<"$out")" = "['"'"'$KEY'"'"']" ]'

expect 0 "volume v2 under version 2" -- "$EVSCTL" volume create "$T/v2.img" --id v2 --key kmip:app-rot
check "v2's token: the same key id, version 2" '[ "$(token "$T/v2.img" evs_key_version)" = 2 ] && [ "$(token "$T/v2.img" evs_key_id)" = "$KEY" ]'
check "v1 (version 1) still opens its keyslot" 'opens "$T/v1.img"'
check "v2 (version 2) opens its keyslot" 'opens "$T/v2.img"'
expect 0 "volume show v1 --json" -- "$EVSCTL" --json volume show v1
check "v1 is wrapped with an older version" \
        '[ "$(jq_ "d[\"key_version\"],d[\"key_latest_version\"],d[\"key_outdated\"]" <<<"$out")" = "(1, 2, True)" ]'

before_key=$("$UNWRAP" "$T/evs-cryptd.conf" "$T/v1.img" | od -An -tx1 | tr -d ' \n')
expect 0 "rewrap v1 --latest" -- "$EVSCTL" volume rewrap v1 --latest
check "it says version 2, was 1" '[[ "$out" == *"re-wrapped under version 2 of key"*"(was version 1)"* ]]'
check "v1's token records version 2 now, one evs-kms token" \
        '[ "$(token "$T/v1.img" evs_key_version)" = 2 ] && [ "$(cryptsetup luksDump "$T/v1.img" | grep -c "evs-kms$")" = 1 ]'
check "same data key" '[ "$("$UNWRAP" "$T/evs-cryptd.conf" "$T/v1.img" | od -An -tx1 | tr -d " \n")" = "$before_key" ]'
check "v1 opens its keyslot" 'opens "$T/v1.img"'
expect 0 "volume show v1 --json" -- "$EVSCTL" --json volume show v1
check "v1 is current" '[ "$(jq_ "d[\"key_version\"],d[\"key_outdated\"]" <<<"$out")" = "(2, False)" ]'

expect 0 "volume show v0 --json" -- "$EVSCTL" --json volume show v0
check "v0 (no version in its token) counts as version 1, outdated" \
        '[ "$(jq_ "d[\"key_version\"],d[\"key_latest_version\"],d[\"key_outdated\"]" <<<"$out")" = "(1, 2, True)" ]'
expect 0 "rewrap --all" -- "$EVSCTL" volume rewrap --all
check "v0 re-wrapped, v1 and v2 already current" '[[ "$out" == *"Volume v0: key version 1, newest 2"* ]] && [[ "$out" == *"1 volume(s) re-wrapped"* ]]'
check "v0's token records version 2" '[ "$(token "$T/v0.img" evs_key_version)" = 2 ]'
check "v0 opens its keyslot" 'opens "$T/v0.img"'

# --- a disabled key refuses every version ---
truncate -s 32M "$T/old.img" "$T/new.img"
expect 0 "create key kmip:app-st" -- "$EVSCTL" --json key create app-st --backend kmip
ST=$(jq_ 'd["id"]' <<<"$out")
expect 0 "volume old under app-st version 1" -- "$EVSCTL" volume create "$T/old.img" --id old --key kmip:app-st
expect 0 "rotate app-st" -- "$EVSCTL" key rotate kmip:app-st
expect 0 "volume new under app-st version 2" -- "$EVSCTL" volume create "$T/new.img" --id new --key kmip:app-st
check "old opens" 'opens "$T/old.img"'
check "new opens" 'opens "$T/new.img"'
expect 0 "disable app-st" -- "$EVSCTL" key disable kmip:app-st
check "the server holds the first key revoked" '[ "$(server_state "$ST")" = DEACTIVATED ]'
for v in old new; do
        check "$v does not unwrap with app-st disabled, saying so" \
                '! "$UNWRAP" "$T/evs-cryptd.conf" "$T/$v.img" >/dev/null 2>"$T/unwrap.err" && grep -q "disabled" "$T/unwrap.err"'
done
expect 3 "rotating a disabled key is refused" -- "$EVSCTL" key rotate kmip:app-st
check "reason: disabled" '[[ "$err" == *"disabled"* ]]'
expect 3 "rewrap --latest under a disabled key is refused" -- "$EVSCTL" volume rewrap old --latest
check "old's token is as it was" '[ "$(token "$T/old.img" evs_key_version)" = 1 ]'

[ "$failed" = 0 ] || { echo "--- daemon log"; tail -50 "$T/daemon.log"; }
tap_done
