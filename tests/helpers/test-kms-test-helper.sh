#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The test helper itself (tests/helpers/evs-kms-test-helper.c), driven directly with protocol requests: every op,
# the AAD binding, its knobs (delay, hang, throttle, rate, ops) and its call log; and the store it shares with
# tests/integration/exec-helper-test.
#   test-kms-test-helper.sh HELPER [PYTHON_HELPER]
set -uo pipefail

H=$(readlink -f "$1")
PYH=${2:+$(readlink -f "$2")}
T=$(mktemp -d /tmp/evs-helper-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"

field() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
# call OP 'EXTRA-MEMBERS' ['EXTRA-OPTIONS']: one request, the reply in $out.
call() {
        local op=$1 extra=${2:-} opts=${3:-}
        out=$(printf '{"version":1,"op":"%s"%s,"options":{"dir":"%s","log":"%s"%s}}\n' \
                "$op" "${extra:+,$extra}" "$T/keys" "$T/log" "${opts:+,$opts}" | "$H" "$op")
}
code() { field 'd.get("error", {}).get("code", "ok")' <<<"$out"; }

call create '"alias":"app/one","description":"first"'
check "create answers an enabled key with an id" '[ "$(field "d[\"state\"], d[\"alias\"], d[\"id\"].startswith(\"tk-\")" <<<"$out")" = "('"'"'enabled'"'"', '"'"'app/one'"'"', True)" ]'
ID=$(field 'd["id"]' <<<"$out")
call create '"alias":"app/one"'
check "a taken alias: exists" '[ "$(code)" = exists ]'
call describe '"key":"app/one"'
check "describe by alias" '[ "$(field "d[\"id\"]" <<<"$out")" = "$ID" ]'
call describe "\"key\":\"$ID\""
check "describe by id, ISO 8601 creation time" '[ "$(field "d[\"alias\"]" <<<"$out")" = app/one ] && [[ "$(field "d[\"created\"]" <<<"$out")" =~ ^20[0-9-]{8}T[0-9:]{8}Z$ ]]'
call describe '"key":"nope"'
check "describe of an unknown key: not-found" '[ "$(code)" = not-found ]'
call list
check "list holds the key" '[ "$(field "[k[\"id\"] for k in d[\"keys\"]]" <<<"$out")" = "['"'"'$ID'"'"']" ]'

PT=$(head -c 32 /dev/urandom | base64 -w0)
call wrap "\"key\":\"$ID\",\"context\":{\"volume_id\":\"vol1\"},\"plaintext\":\"$PT\""
CT=$(field 'd["ciphertext"]' <<<"$out")
check "wrap answers an evst1 ciphertext" '[[ "$CT" == evst1:$ID:* ]]'
call unwrap "\"key\":\"$ID\",\"context\":{\"volume_id\":\"vol1\"},\"ciphertext\":\"$CT\""
check "unwrap gives the plaintext back" '[ "$(field "d[\"plaintext\"]" <<<"$out")" = "$PT" ]'
call unwrap "\"key\":\"$ID\",\"context\":{\"volume_id\":\"vol2\"},\"ciphertext\":\"$CT\""
check "unwrap for another volume: bad-ciphertext" '[ "$(code)" = bad-ciphertext ]'
BAD=${CT%????}AAAA
call unwrap "\"key\":\"$ID\",\"context\":{\"volume_id\":\"vol1\"},\"ciphertext\":\"$BAD\""
check "a damaged ciphertext: bad-ciphertext" '[ "$(code)" = bad-ciphertext ]'
call create '"alias":"app/two"'
ID2=$(field 'd["id"]' <<<"$out")
call unwrap "\"key\":\"$ID2\",\"context\":{\"volume_id\":\"vol1\"},\"ciphertext\":\"$CT\""
check "unwrap under another key: wrong-key" '[ "$(code)" = wrong-key ]'

call disable "\"key\":\"$ID\""
call unwrap "\"key\":\"$ID\",\"context\":{\"volume_id\":\"vol1\"},\"ciphertext\":\"$CT\""
check "disable: unwrap answers disabled" '[ "$(code)" = disabled ]'
call enable "\"key\":\"$ID\""
call schedule-deletion "\"key\":\"$ID\",\"days\":7"
check "schedule-deletion answers the key, pending deletion with a date" '[ "$(field "d[\"state\"], d[\"deletion_date\"] is not None" <<<"$out")" = "('"'"'pending-deletion'"'"', True)" ]'
call enable "\"key\":\"$ID\""
check "enable while pending deletion: invalid-state" '[ "$(code)" = invalid-state ]'
call cancel-deletion "\"key\":\"$ID\""
call describe "\"key\":\"$ID\""
check "cancel-deletion leaves it disabled" '[ "$(field "d[\"state\"], d[\"deletion_date\"]" <<<"$out")" = "('"'"'disabled'"'"', None)" ]'
call enable "\"key\":\"$ID\""
call frobnicate
check "an unknown op: unsupported" '[ "$(code)" = unsupported ]'
out=$(echo '{"version":1,"op":"describe","key":"x","options":{}}' | "$H" describe)
check "no dir= option: invalid" '[ "$(code)" = invalid ]'
out=$(echo '{"version":1,"op":"list","options":{"dir":"'"$T/keys"'"}}' | "$H" describe)
check "op differing from argv[1]: invalid" '[ "$(code)" = invalid ]'

echo "# the call log"
check "one line per call, seven fields, END >= START" \
        '[ "$(awk "NF != 7 || \$2 < \$1" "$T/log" | wc -l)" = 0 ] && [ "$(wc -l <"$T/log")" -ge 20 ]'
check "the unwrap lines name key, volume and result" \
        'grep -q " unwrap $ID vol1 ok$" "$T/log" && grep -q " unwrap $ID vol2 bad-ciphertext$" "$T/log"'
check "the PID field is the helper's (differs per call)" '[ "$(cut -d" " -f3 "$T/log" | sort -u | wc -l)" -ge 20 ]'

echo "# knobs"
: >"$T/log"
t0=${EPOCHREALTIME/[.,]/}
call describe "\"key\":\"$ID\"" '"delay":"300"'
t1=${EPOCHREALTIME/[.,]/}
check "delay=300: answered after >= 300 ms" '[ $((t1 - t0)) -ge 300000 ] && [ "$(code)" = ok ]'
check "the log covers the delay" 'awk "{ exit !(\$2 - \$1 >= 0.3) }" "$T/log"'
t0=${EPOCHREALTIME/[.,]/}
call list '' '"delay":"300","ops":"describe,unwrap"'
t1=${EPOCHREALTIME/[.,]/}
check "ops=describe,unwrap: list is not delayed" '[ $((t1 - t0)) -lt 250000 ] && [ "$(code)" = ok ]'

: >"$T/log"
for i in 1 2 3; do
        call unwrap "\"key\":\"$ID\",\"context\":{\"volume_id\":\"vol1\"},\"ciphertext\":\"$CT\"" '"throttle":"2"'
        eval "c$i=\$(code)"
done
# shellcheck disable=SC2154  # c1..c3 set by eval
check "throttle=2: throttled, throttled, then served" '[ "$c1 $c2 $c3" = "throttled throttled ok" ]'
call unwrap "\"key\":\"$ID2\",\"context\":{\"volume_id\":\"vol9\"},\"ciphertext\":\"x\"" '"throttle":"2"'
check "another request has its own count" '[ "$(code)" = throttled ]'
check "the log shows the throttled answers" '[ "$(grep -c " throttled$" "$T/log")" = 3 ]'

for i in 1 2 3; do
        call list '' '"rate":"2"'
        eval "r$i=\$(code)"
done
# shellcheck disable=SC2154
check "rate=2: the third request within a second is throttled" '[ "$r1 $r2 $r3" = "ok ok throttled" ]'
sleep 1.1
call list '' '"rate":"2"'
check "a second later it is served again" '[ "$(code)" = ok ]'

: >"$T/log"
t0=${EPOCHREALTIME/[.,]/}
printf '{"version":1,"op":"describe","key":"%s","options":{"dir":"%s","log":"%s","hang":"1"}}\n' "$ID" "$T/keys" "$T/log" \
        | timeout 1 "$H" describe >"$T/hang.out"
rc=$?
t1=${EPOCHREALTIME/[.,]/}
check "hang=1: no answer until killed" '[ "$rc" = 124 ] && [ ! -s "$T/hang.out" ] && [ $((t1 - t0)) -ge 900000 ]'
check "its log line is written at the start, END '-', result hang" 'grep -q "^[0-9.]* - [0-9]* describe $ID - hang$" "$T/log"'

echo "# concurrent creates of one alias: exactly one wins"
for i in $(seq 8); do
        (call create '"alias":"race"'; code >"$T/race.$i") &
done
wait
check "one ok, seven exists" '[ "$(cat "$T"/race.* | sort | uniq -c | tr -s " " | tr "\n" ";")" = " 7 exists; 1 ok;" ]'

if [ -n "$PYH" ] && /usr/bin/python3 -c 'import cryptography' 2>/dev/null; then
        echo "# the same store as exec-helper-test"
        out=$(printf '{"version":1,"op":"unwrap","key":"%s","context":{"volume_id":"vol1"},"ciphertext":"%s","options":{"dir":"%s"}}\n' \
                "$ID" "$CT" "$T/keys" | "$PYH" unwrap)
        check "the python helper unwraps what this one wrapped" '[ "$(field "d[\"plaintext\"]" <<<"$out")" = "$PT" ]'
        out=$(printf '{"version":1,"op":"create","alias":"py","options":{"dir":"%s"}}\n' "$T/keys" | "$PYH" create)
        PYID=$(field 'd["id"]' <<<"$out")
        out=$(printf '{"version":1,"op":"wrap","key":"%s","context":{"volume_id":"v"},"plaintext":"%s","options":{"dir":"%s"}}\n' \
                "$PYID" "$PT" "$T/keys" | "$PYH" wrap)
        PYCT=$(field 'd["ciphertext"]' <<<"$out")
        call unwrap "\"key\":\"py\",\"context\":{\"volume_id\":\"v\"},\"ciphertext\":\"$PYCT\""
        check "and this one unwraps the python helper's" '[ "$(field "d[\"plaintext\"]" <<<"$out")" = "$PT" ]'
else
        echo "# python3-cryptography is absent: the shared-store checks are left out"
fi

tap_done
