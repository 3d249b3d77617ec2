#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# evsctl's usage errors and help without a daemon: `evsctl GROUP` and `evsctl GROUP --help` list that
# group's verbs (exit 2 and 0), an unknown verb or group suggests the nearest one, every usage error is
# one "evsctl: ..." line with exit code 2.
# Usage: test-evsctl-usage.sh EVSCTL
set -u
E=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/../lib/tap.sh"
export EVS_BUS=$T/no-such-bus

for g in key volume image server as-config; do
        n=$("$E" --help | grep -c "^  $g ")
        expect 0 "evsctl $g --help" -- "$E" "$g" --help
        check "it lists the $n verbs of $g, and only those" '[ "$(grep -c "^  $g [a-z]" <<<"$out")" = "$n" ] && ! grep "^  [a-z]" <<<"$out" | grep -vq "^  $g "'
        expect 2 "evsctl $g (no verb)" -- "$E" "$g"
        check "says a verb is needed, then lists them on stderr" '[ "$(head -n 1 <<<"$err")" = "evsctl: $g needs a verb." ] && [ "$(grep -c "^  $g [a-z]" <<<"$err")" = "$n" ]'
done
expect 0 "evsctl --help --json key (options before the group)" -- "$E" --json key --help
check "the key verbs" 'grep -q "^  key schedule-deletion KEY --days N" <<<"$out"'

expect 2 "a typo in a verb" -- "$E" key lst
check "suggests list: $err" '[ "$err" = "evsctl: unknown verb '"'"'key lst'"'"'; did you mean '"'"'list'"'"'? (see evsctl --help)" ]'
expect 2 "a prefix of a verb" -- "$E" key sched KEY
check "suggests schedule-deletion" '[[ $err == *"did you mean '"'"'schedule-deletion'"'"'?"* ]]'
expect 2 "a typo in a group" -- "$E" volme list
check "suggests volume" '[[ $err == "evsctl: unknown verb group '"'"'volme'"'"'; did you mean '"'"'volume'"'"'?"* ]]'
expect 2 "a verb nothing resembles" -- "$E" image frobnicate
check "no suggestion, one line" '[ "$err" = "evsctl: unknown verb '"'"'image frobnicate'"'"' (see evsctl --help)" ]'

expect 2 "an unknown long option" -- "$E" key list --bogus
check "starts with evsctl: ($err)" '[ "$err" = "evsctl: unknown option --bogus (see evsctl --help)" ]'
expect 2 "an unknown short option" -- "$E" -x key list
check "starts with evsctl: ($err)" '[ "$err" = "evsctl: unknown option -x (see evsctl --help)" ]'
expect 2 "an option without its value" -- "$E" key schedule-deletion k1 --days
check "starts with evsctl: ($err)" '[ "$err" = "evsctl: option --days needs a value (see evsctl --help)" ]'
expect 2 "an option of another verb" -- "$E" key list --force
check "one evsctl: line" '[[ $err == "evsctl: an option given is not valid for: evsctl key list"* ]] && [ "$(wc -l <<<"$err")" = 1 ]'
tap_done
