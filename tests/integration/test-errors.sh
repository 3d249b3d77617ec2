#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test: what evsctl shows of text it did not write (KMS messages, key descriptions) stays on
# one line with control characters escaped, --json stays exact; write failures carry their reason and the
# documented exit code (issue 10, items 9 and 11).
#   test-errors.sh EVS_CRYPTD EVSCTL EXEC_HELPER
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") HELPER=$(readlink -f "$3")
for tool in chattr setpriv; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
/usr/bin/python3 -c 'import cryptography' 2>/dev/null || { echo "SKIP: python3-cryptography is not installed"; exit 77; }

T=$(mktemp -d /tmp/evs-errors.XXXXXX)
PID=
cleanup() {
        chattr -R -i "$T" 2>/dev/null
        [ -n "$PID" ] && kill "$PID" 2>/dev/null
        wait 2>/dev/null
        rm -rf "$T"
}
trap cleanup EXIT

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/bus

[Backend evil]
Type=exec
Helper=$HELPER
Option.dir=$T/evil
Option.misbehave=control-chars
CONF
# Under `meson test --setup valgrind` the daemon runs under valgrind: its exit status at the end says.
${EVS_VALGRIND_WRAPPER:-} "$DAEMON" --config "$T/evs-cryptd.conf" 2>"$T/daemon.log" &
PID=$!
for _ in $(seq 600); do [ -S "$T/bus" ] && break; sleep 0.05; done
export EVS_BUS=$T/bus

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
jq_() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$@"; }
# No control character on any line (the lines themselves are what a terminal would show).
clean() { ! printf '%s' "$1" | LC_ALL=C grep -q '[[:cntrl:]]'; }
one_line() { [ "$(printf '%s\n' "$1" | wc -l)" = 1 ]; }

# --- item 11: write failures (before the default key exists) ---
mkdir -p "$T/state/keys"
touch "$T/state/keys/.lock" # the store's lock file exists once the daemon ran: what fails is the key's write
truncate -s 32M "$T/v1.img"
if chattr +i "$T/state/keys" 2>/dev/null; then
        expect 7 "an immutable key directory: volume create on the default key exits 7, not 3" -- \
                "$EVSCTL" volume create "$T/v1.img" --id v1
                check "the reason names the default key and the errno" \
                '[[ "$err" == *"Key evs/default: cannot write $T/state/keys/"*": Operation not permitted."* ]]'
        check "nothing was written to the disk" '! cryptsetup isLuks "$T/v1.img"'
        expect 7 "an immutable key directory: key create exits 7" -- "$EVSCTL" key create blocked
                check "the reason says the write was not permitted" '[[ "$err" == *"cannot write"*"Operation not permitted"* ]]'
        chattr -i "$T/state/keys"
        expect 0 "the same create works once the directory is writable" -- "$EVSCTL" volume create "$T/v1.img" --id v1
else
        echo "# chattr +i is not supported on $T's file system: the immutable-directory checks were not run"
fi
expect 2 "a character device is refused as a usage error, not System.Error.ENOTBLK" -- \
        "$EVSCTL" volume create /dev/null --id vnull
check "the reason names the device and says why" '[[ "$err" == *"/dev/null: it is neither a block device nor an image file."* ]]'

# --- item 9: text from a KMS or a record, on one line ---
desc=$'first\nsecond \e[31mred\e[0m\a'
expect 0 "a key whose description holds a newline and ANSI escapes" -- "$EVSCTL" key create ctl --description "$desc"
expect 0 "key list" -- "$EVSCTL" key list
check "key list: no control character reaches the terminal" 'clean "$out"'
n_keys=$("$EVSCTL" --json key list | jq_ 'len(d)')
check "key list: one header and one line per key" '[ "$(wc -l <<<"$out")" = $((n_keys + 1)) ]'
expect 0 "key show" -- "$EVSCTL" key show ctl
check "key show: no control character, the description on one line" \
        'clean "$out" && grep -q "description: first\\\\nsecond \\\\x1b\[31mred" <<<"$out"'
expect 0 "key show --json" -- "$EVSCTL" --json key show ctl
check "--json keeps the exact description" \
        '[ "$(jq_ "d[\"description\"] == \"first\\nsecond \\x1b[31mred\\x1b[0m\\x07\"" <<<"$out")" = True ]'

bad="$T"$'/disk\nwith \e[1mescapes.img'
truncate -s 32M "$bad"
expect 0 "a volume on an image file whose name holds a newline and an escape" -- "$EVSCTL" volume create "$bad" --id vbad
check "volume create: the device is shown on one line" 'clean "$out" && grep -q "device: $T/disk\\\\nwith \\\\x1b\[1mescapes.img" <<<"$out"'
expect 0 "volume list" -- "$EVSCTL" volume list
check "volume list: no control character, one row per volume" \
        'clean "$out" && [ "$(wc -l <<<"$out")" = 3 ] && grep -q "^vbad .*$T/disk\\\\nwith \\\\x1b\[1mescapes.img" <<<"$out"'
expect 0 "volume list --json" -- "$EVSCTL" --json volume list
check "--json keeps the exact device path" '[ "$(jq_ "[v[\"device\"] for v in d if v[\"id\"] == \"vbad\"] == [sys.argv[2]]" "$bad" <<<"$out")" = True ]'

expect 6 "a helper whose error message holds a newline and ANSI escapes" -- "$EVSCTL" key create x --backend evil
check "the error is one line with no control character" 'one_line "$err" && clean "$err"'
check "the helper's text is shown escaped" '[[ "$err" == *"first line\\nsecond \\x1b[31mred\\x1b[0m\\a"* ]]'
expect 6 "the same through --json (errors are text)" -- "$EVSCTL" --json key create x --backend evil
check "--json: the error is one line too" 'one_line "$err" && clean "$err"'
check "the daemon's log has no control character either" '! LC_ALL=C grep -q "[[:cntrl:]]" "$T/daemon.log"'

kill "$PID"; wait "$PID"; rc=$?; PID=
check "daemon exits cleanly on SIGTERM (under valgrind: no error, no leak)" '[ "$rc" = 0 ] || { grep "==[0-9]*==" "$T/daemon.log" | head -40; false; }'

tap_done
