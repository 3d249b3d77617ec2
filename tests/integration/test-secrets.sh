#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test: no secret leaves its place. With the daemon logging at debug level, a local and an
# exec backend, volumes created, shown, refused, rewrapped and an image imported, the known secrets (every
# volume's and the image's data key, unwrapped with the library; the local CMKs' material, unsealed with the
# root key and proven by unwrapping a token with it; the root key) are looked for, raw, hex and base64, in
# the daemon's log, evsctl's output (text and --json), the state files, the disks' headers and what the exec
# helper was given as argv and environment.
#   test-secrets.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST EXEC_HELPER
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3") HELPER=$(readlink -f "$4")
HERE=$(dirname "$(readlink -f "$0")")
command -v cryptsetup >/dev/null || { echo "SKIP: cryptsetup is not installed"; exit 77; }
/usr/bin/python3 -c 'import cryptography' 2>/dev/null || { echo "SKIP: python3-cryptography is not installed"; exit 77; }

T=$(mktemp -d /tmp/evs-secrets.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
mkdir -p "$T/out" "$T/secrets" "$T/extkeys"

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/bus

[Backend ext]
Type=exec
Helper=$HELPER
Option.dir=$T/extkeys
Option.record=$T/helper-record.jsonl
CONF
"$DAEMON" --debug --config "$T/evs-cryptd.conf" 2>"$T/daemon.log" &
PID=$!
for _ in $(seq 200); do [ -S "$T/bus" ] && break; sleep 0.05; done
export EVS_BUS=$T/bus

. "$HERE/../lib/tap.sh"

# Every verb twice, as text and as --json, both streams kept.
n=0
both() {
        n=$((n + 1))
        "$EVSCTL" "$@" >"$T/out/$n.txt" 2>&1
        "$EVSCTL" --json "$@" >"$T/out/$n.json" 2>&1
}

truncate -s 32M "$T/v1.img" "$T/v2.img" "$T/v3.img"
head -c $((4 * 1024 * 1024)) /dev/urandom >"$T/src.raw"
expect 0 "local key k1" -- "$EVSCTL" key create k1 --description "for the secrets test"
expect 0 "exec key e1" -- "$EVSCTL" key create e1 --backend ext
both volume create "$T/v1.img" --id v1 --key k1
both volume create "$T/v2.img" --id v2 --key ext:e1
both volume create "$T/v3.img" --id v3
check "three volumes created" '[ "$("$EVSCTL" --json volume list | grep -c "\"id\"")" = 3 ]'
for v in "volume show v1" "volume show v2" "volume list" "key list" "key show k1" "key show ext:e1" \
        "key show evs/default" "status" "volume attach v1" "volume attach v2"; do
        # shellcheck disable=SC2086
        both $v
done
both volume rewrap v1 --key ext:e1
both volume rewrap v1 --key k1
both image import "$T/src.raw" --name im1 --key k1
both image list
both image show im1
"$EVSCTL" key disable k1 >/dev/null
both volume attach v1
"$EVSCTL" key enable k1 >/dev/null
check "the image was imported" '"$EVSCTL" image show im1 >/dev/null'

# --- the known secrets ---
image=$(ls "$T"/state/images/*.img)
for v in v1 v2 v3; do "$UNWRAP" "$T/evs-cryptd.conf" "$T/$v.img" >"$T/secrets/data-key-$v"; done
"$UNWRAP" "$T/evs-cryptd.conf" "$image" >"$T/secrets/data-key-image"
check "every data key is 32 bytes" '[ "$(cat "$T"/secrets/data-key-* | wc -c)" = 128 ]'
check "the data keys open their keyslots" \
        'for v in v1 v2 v3; do cryptsetup open --test-passphrase --key-file="$T/secrets/data-key-$v" "$T/$v.img" || exit 1; done'
for f in "$T"/state/keys/*.json; do
        alias=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["alias"])' "$f")
        "$HERE/local-material.py" "$T/state/root.key" "$f" >"$T/secrets/material-${alias//\//-}"
done
cp "$T/state/root.key" "$T/secrets/root-key"
check "the material of k1 and evs/default is known" '[ -s "$T/secrets/material-k1" ] && [ -s "$T/secrets/material-evs-default" ]'
cryptsetup token export --token-id "$(cryptsetup luksDump "$T/v1.img" | sed -n 's/^  \([0-9]*\): evs-kms$/\1/p' | head -1)" \
        "$T/v1.img" >"$T/v1-token.json"
k1_file=$(grep -l '"alias":"k1"' "$T"/state/keys/*.json)
check "the unsealed material of k1 unwraps v1's token to v1's data key (so the material is the real one)" \
        'cmp -s <("$HERE/local-material.py" "$T/state/root.key" "$k1_file" "$T/v1-token.json") "$T/secrets/data-key-v1"'

# --- where they must not be ---
check "the helper was called (its argv and environment are recorded)" '[ -s "$T/helper-record.jsonl" ]'
mapfile -t files < <(find "$T/state" -type f ! -name root.key; ls "$T"/out/* "$T/daemon.log" "$T/helper-record.jsonl" "$T"/v?.img)
check "the daemon logged at debug level" 'grep -q "^<7>" "$T/daemon.log"'
expect 0 "no secret, raw, hex or base64, in the log, the output, the state files, the disks or the helper's argv/env" -- \
        "$HERE/secrets-scan.py" "$T/secrets" "${files[@]}"
[ "$tap_rc" = 0 ] || printf '%s\n' "$out" | grep LEAK | head -20
echo "# ${out##*$'\n'}"

tap_done
