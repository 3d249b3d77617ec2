#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# evsctl(8) documents every verb and option that `evsctl --help` lists, and every exit code;
# `evsctl GROUP VERB --help` answers for each verb (no daemon needed).
# Usage: test-evsctl-man.sh EVSCTL EVSCTL.8
set -u
evsctl=$1
page=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$evsctl" --help >"$tmp/help" || fail "evsctl --help"
# The man page as text: no font escapes, plain hyphens, one space between words.
sed -e 's/\\f[BIRP]//g' -e 's/\\-/-/g' -e 's/\\(aq/'"'"'/g' "$page" | tr -s ' \t' ' ' >"$tmp/page"

# Verb lines: two spaces, then lower-case words (the verb), then arguments or the description.
n=0
while read -r line; do
        verb=$(echo "$line" | awk '{ v = ""; for (i = 1; i <= NF && $i ~ /^[a-z][a-z-]*$/; i++) v = v (v ? " " : "") $i; print v }')
        [ -n "$verb" ] || continue
        n=$((n + 1))
        grep -qF "$verb" "$tmp/page" || fail "verb '$verb' is not in evsctl(8)"
        grep -qF ".SS" "$tmp/page" || true
        # shellcheck disable=SC2086
        "$evsctl" $verb --help >"$tmp/verb" || fail "evsctl $verb --help failed"
        head -1 "$tmp/verb" | grep -qF "evsctl $verb" || fail "evsctl $verb --help: $(head -1 "$tmp/verb")"
done < <(sed -n '/^Inspect/,/^Options:/p' "$tmp/help" | grep '^  [a-z]')
[ "$n" -ge 13 ] || fail "only $n verbs found in evsctl --help"

# Every long option of the global help and of the verbs' usages.
for opt in $(grep -o -- '--[a-z][a-z-]*' "$tmp/help" | sort -u); do
        grep -qF -- "$opt" "$tmp/page" || fail "option $opt is not in evsctl(8)"
done
# Every exit code 0..8 in the EXIT STATUS table.
sed -n '/^\.SH "*EXIT STATUS/,/^\.SH/p' "$tmp/page" >"$tmp/exit"
for code in 0 1 2 3 4 5 6 7 8; do
        grep -qx "$code" "$tmp/exit" || grep -q "^T{ *$code" "$tmp/exit" || grep -q "^$code\b" "$tmp/exit" ||
                fail "exit code $code is not in EXIT STATUS"
done
# An unknown verb is a usage error, so the loop above cannot pass by accident.
"$evsctl" key frobnicate --help >/dev/null 2>&1
[ $? -eq 2 ] || fail "unknown verb not refused with 2"
# The footer carries the version (scdoc's .TH: name, section, date, footer), SEE ALSO the system's tools.
version=$("$evsctl" --version | cut -d" " -f2)
grep -q "^\.TH \"*evsctl\"* \"*8\"* .*evs-cryptd $version" "$page" || fail "the footer has no version $version: $(grep "^\.TH" "$page")"
sed -n '/^\.SH "*SEE ALSO/,$p' "$page" >"$tmp/see"
for ref in 'crypttab.*(5)' 'systemd-cryptsetup.*(8)' 'journalctl.*(1)'; do
        grep -q "$ref" "$tmp/see" || fail "SEE ALSO lacks $ref"
done
echo "ok: $n verbs"
