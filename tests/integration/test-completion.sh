#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# completions/evsctl against the built evsctl (groups, verbs, options from its --help) and a stub
# daemon answer for the lookups (key aliases, volume ids, images, backends).
# Usage: test-completion.sh EVSCTL COMPLETION
set -u
real=$(realpath "$1")
completion=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# A stub evsctl: --help from the real one, canned --json answers (as evsctl prints them).
mkdir "$tmp/bin"
cat >"$tmp/bin/evsctl" <<STUB
#!/bin/bash
args="\$*"
case "\$args" in
*"--json key list") printf '[\n  {\n    "id": "1111-key",\n    "alias": "finance",\n    "state": "enabled"\n  },\n  {\n    "id": "2222-key",\n    "alias": "evs/default",\n    "state": "enabled"\n  }\n]\n' ;;
*"--json volume list") printf '[\n  {\n    "id": "vol-0042",\n    "device": "/dev/vdb"\n  }\n]\n' ;;
*"--json image list") printf '[\n  {\n    "id": "img-0123456789ab",\n    "name": "debian12"\n  }\n]\n' ;;
*"--json server list") printf '[\n  {\n    "name": "web1",\n    "image": "img-0123456789ab"\n  }\n]\n' ;;
*"--json as-config list") printf '[\n  {\n    "name": "asc1",\n    "image": "img-0123456789ab"\n  }\n]\n' ;;
*"--json status") printf '{\n  "version": "0.1.0",\n  "backends": [\n    "local",\n    "hsm"\n  ],\n  "volumes": 1\n}\n' ;;
*) exec "$real" "\$@" ;;
esac
STUB
chmod +x "$tmp/bin/evsctl"
export PATH="$tmp/bin:$PATH"
# shellcheck disable=SC1090
source "$completion"

# expect "WORDS..." "EXPECTED SORTED REPLY": completes the last word of WORDS ("" for a new word).
expect() {
        local line=$1 want=$2 got
        read -r -a COMP_WORDS <<<"$line"
        [[ $line == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE=$line
        COMP_POINT=${#line}
        COMPREPLY=()
        _evsctl
        got=$(printf '%s\n' "${COMPREPLY[@]}" | sort -u | tr '\n' ' ' | sed 's/ $//')
        [ "$got" = "$want" ] || fail "'$line': got '$got', want '$want'"
}

expect "evsctl " "as-config image key metrics server status volume"
expect "evsctl --json " "as-config image key metrics server status volume"
expect "evsctl key " "cancel-deletion create disable enable list rotate schedule-deletion set-rotation show"
expect "evsctl key rotate fi" "finance"
expect "evsctl volume rewrap vol-0042 --la" "--latest"
expect "evsctl volume a" "attach"
expect "evsctl key show " "1111-key 2222-key evs/default finance"
expect "evsctl key disable fi" "finance"
expect "evsctl volume attach " "vol-0042"
expect "evsctl volume detach v" "vol-0042"
expect "evsctl image show deb" "debian12"
expect "evsctl volume create /dev/vdb --key fin" "finance"
expect "evsctl key create x --backend " "hsm local"
expect "evsctl volume create /dev/vdb --fo" "--force"
# Only the options the verb takes, and the global ones.
expect "evsctl --fo" ""
expect "evsctl key create x --" "--backend --bus --description --help --json"
expect "evsctl key list --" "--bus --help --json"
expect "evsctl volume detach vol-0042 --" "--bus --force --help --json"
expect "evsctl server create x --" "--as-config --bus --data-disk --force --help --image --json --system-disk"
expect "evsctl key schedule-deletion k --d" "--days"
expect "evsctl key list --fo" ""
expect "evsctl metrics --" "--bus --format --help --json --output"
expect "evsctl metrics --format " "openmetrics prometheus"
expect "evsctl status --" "--bus --help --json"
expect "evsctl key --" "--bus --help --json"
expect "evsctl --" "--bus --help --json --version"
expect "evsctl -j key li" "list"
expect "evsctl key list " ""
expect "evsctl server show w" "web1"
expect "evsctl server create x --image deb" "debian12"
expect "evsctl server create x --as-config " "asc1"
expect "evsctl image create --from-server w" "web1"
expect "evsctl as-config show a" "asc1"
# Every verb of --help is offered.
for g in $("$real" --help | sed -n 's/^  \([a-z][a-z-]*\) [a-z][a-z-]*.*/\1/p' | sort -u); do
        for v in $("$real" --help | sed -n "s/^  $g \([a-z][a-z-]*\).*/\1/p"); do
                expect "evsctl $g $v" "$v"
        done
done
echo "ok"
