#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# evs-cryptd.catalog has one entry for every MESSAGE_ID of src/shared/evs-messages.h (and none for an
# id the daemon does not use), each with a Subject:, Defined-By: and an explanation, and journalctl
# indexes it: `journalctl --root=DIR --update-catalog` builds the database from DIR's catalog directory
# and `--list-catalog` / `--dump-catalog` read every entry back.
# Usage: test-catalog.sh EVS-MESSAGES.H EVS-CRYPTD.CATALOG     (skips with 77 without journalctl)
set -u
header=$1
catalog=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/../lib/tap.sh"

sed -n 's/^#define EVS_MESSAGE_[A-Z0-9_]* "\([0-9a-f]*\)"$/\1/p' "$header" | sort >"$T/ids"
sed -n 's/^-- \([0-9a-f]*\)$/\1/p' "$catalog" | sort >"$T/entries"
check "the header defines message ids ($(wc -l <"$T/ids"))" '[ "$(wc -l <"$T/ids")" -ge 6 ]'
check "every id is 128 bits of hex" '! grep -qvx "[0-9a-f]\{32\}" "$T/ids"'
check "no id defined twice" '[ -z "$(uniq -d "$T/ids")" ]'
check "no catalog entry twice" '[ -z "$(uniq -d "$T/entries")" ]'
missing=$(comm -23 "$T/ids" "$T/entries" | tr '\n' ' ')
check "every MESSAGE_ID has a catalog entry${missing:+ (missing: $missing)}" '[ -z "$missing" ]'
stale=$(comm -13 "$T/ids" "$T/entries" | tr '\n' ' ')
check "no entry for an id the header does not define${stale:+ ($stale)}" '[ -z "$stale" ]'

# Each entry: "-- ID", then Subject:, Defined-By:, Documentation: headers, an empty line, a text.
bad=$(awk '
        /^-- / { if (id != "" && !(subj && def && body)) print id; id = $2; subj = def = body = 0; hdr = 1; next }
        id == "" { next }
        hdr && /^Subject: ./ { subj = 1; next }
        hdr && /^Defined-By: evs-cryptd$/ { def = 1; next }
        hdr && /^$/ { hdr = 0; next }
        !hdr && /[a-z]/ { body = 1 }
        END { if (id != "" && !(subj && def && body)) print id }' "$catalog" | tr '\n' ' ')
check "every entry has Subject:, Defined-By: evs-cryptd and an explanation${bad:+ (not: $bad)}" '[ -z "$bad" ]'
check "refusals tell the operator what to do" 'awk "/^-- dc7f4e099cd84e59a063ff0e2c88110c/,/^-- [0-9a-f]+$/ && !/dc7f4e/" "$catalog" | grep -q "evsctl key enable"'

if ! command -v journalctl >/dev/null; then
        echo "SKIP: journalctl is not installed (systemd): the catalog's format is not checked"
        tap_done
        [ "$failed" = 0 ] && exit 77
        exit 1
fi
mkdir -p "$T/root/usr/lib/systemd/catalog" "$T/root/var/lib/systemd/catalog"
cp "$catalog" "$T/root/usr/lib/systemd/catalog/evs-cryptd.catalog"
expect 0 "journalctl --update-catalog parses it" -- journalctl --root="$T/root" --update-catalog
check "without complaints: ${err:-none}" '[ -z "$err" ]'
expect 0 "journalctl --list-catalog" -- journalctl --root="$T/root" --list-catalog
printf '%s\n' "$out" | cut -d' ' -f1 | sort >"$T/listed"
check "journalctl lists every id" 'cmp -s "$T/ids" "$T/listed"'
expect 0 "journalctl --dump-catalog" -- journalctl --root="$T/root" --dump-catalog
check "the refusal's subject reads back" 'printf "%s\n" "$out" | grep -qx "Subject: Attaching EVS volume @EVS_VOLUME_ID@ was refused"'
tap_done
