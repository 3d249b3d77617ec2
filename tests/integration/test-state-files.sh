#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Fault test: bad files in the state directory. A FIFO, a directory, a symlink, garbage, a truncated, an oversized
# or a misnamed key file makes only that key unavailable (named in `key list` and in one warning of the daemon);
# every other key keeps working and nothing hangs. A missing root key is never silently made again while keys
# are sealed under it. A corrupt volume record shows the volume with state "unknown", never drops it.
#   test-state-files.sh EVS_CRYPTD EVSCTL
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2")
PY=/usr/bin/python3
for tool in cryptsetup timeout mkfifo "$PY"; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done

T=$(mktemp -d /tmp/evs-test.XXXXXX)
PID=
stop() {
        [ -n "$PID" ] || return 0
        kill "$PID" 2>/dev/null
        # A daemon hung on a state file ignores SIGTERM: that is a failure, and it must not outlive the test.
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$PID" 2>/dev/null; then kill -9 "$PID"; wait "$PID" 2>/dev/null; stop_rc=hung
        else wait "$PID"; stop_rc=$?; fi
        PID=
}
cleanup() { stop; rm -rf "$T"; }
trap cleanup EXIT

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/run/bus
CONF
start() {
        rm -f "$T/run/bus"
        "$DAEMON" --config "$T/evs-cryptd.conf" 2>>"$T/daemon.log" &
        PID=$!
        # The socket file exists from bind(), a moment before listen(): wait for an answer.
        for _ in $(seq 100); do timeout 5 "$EVSCTL" --bus "$T/run/bus" status >/dev/null 2>&1 && break; sleep 0.05; done
}
start
export EVS_BUS=$T/run/bus
E() { timeout 10 "$EVSCTL" "$@"; }

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
jq_() { "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

expect 0 "create key app1" -- E --json key create app1
APP1=$(jq_ 'd["id"]' <<<"$out")
expect 0 "create key victim" -- E --json key create victim
VICTIM=$(jq_ 'd["id"]' <<<"$out")
expect 0 "the default key" -- E key show evs/default
truncate -s 32M "$T/vol1.img"
expect 0 "volume create on app1" -- E --json volume create "$T/vol1.img" --id vol1 --key app1
# --- a volume's creation time: recorded by volume create, well-formed, the same in show, list and after a restart ---
CREATED=$(jq_ 'd["created"]' <<<"$out")
well_formed() { "$PY" -c 'import sys, datetime as D
t = D.datetime.strptime(sys.argv[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=D.timezone.utc)
sys.exit(abs((D.datetime.now(D.timezone.utc) - t).total_seconds()) > 600)' "$1"; }
check "volume create prints created, UTC like the other times, now" 'well_formed "$CREATED"'
check "the record holds it" '"$PY" -c "import json,sys; sys.exit(not isinstance(json.load(open(sys.argv[1]))[\"created\"], int))" "$T/state/volumes/vol1.json"'
expect 0 "volume show vol1" -- E --json volume show vol1
check "volume show: the same created" '[ "$(jq_ "d[\"created\"]" <<<"$out")" = "$CREATED" ]'
expect 0 "volume show vol1 (text)" -- E volume show vol1
check "the text shows it" 'grep -q "^ *created: $CREATED$" <<<"$out"'
expect 0 "volume list" -- E --json volume list
check "volume list: the same created" '[ "$(jq_ "[v[\"created\"] for v in d if v[\"id\"] == \"vol1\"]" <<<"$out")" = "['"'"'$CREATED'"'"']" ]'
# A record of a version before the field: it loads, the volume lists with its key, created null.
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("created"); d["id"]="volold"; json.dump(d, open(sys.argv[2], "w"))' \
        "$T/state/volumes/vol1.json" "$T/state/volumes/volold.json"
expect 0 "volume list with a record without created" -- E --json volume list
check "the old record lists (its device holds another volume: not present), created null" \
        '[ "$(jq_ "[(v[\"state\"], v[\"device\"], v[\"created\"], v[\"last_error\"]) for v in d if v[\"id\"] == \"volold\"]" <<<"$out")" = "[('"'"'detached'"'"', '"'"'$T/vol1.img'"'"', None, '"'"'device not present'"'"')]" ]'
expect 0 "volume show of the old record" -- E --json volume show volold
check "created null" '[ "$(jq_ "d[\"created\"]" <<<"$out")" = None ]'
rm -f "$T/state/volumes/volold.json"
# A volume made elsewhere (here: its record gone) has no created until this host first records it; then it
# is the time of that first record: its first attach, which records the volume whether it opens (a host with
# device-mapper: detached again) or fails (these hosts have none).
mv "$T/state/volumes/vol1.json" "$T/vol1.rec"
expect 0 "volume show by device, no record" -- E --json volume show "$T/vol1.img"
check "no record: created null" '[ "$(jq_ "d[\"created\"]" <<<"$out")" = None ]'
if E volume attach "$T/vol1.img" >/dev/null 2>&1; then E volume detach vol1 --force >/dev/null; fi
expect 0 "volume show vol1, recorded by the attach" -- E --json volume show vol1
check "created: the time of the first record, now" 'FIRST=$(jq_ "d[\"created\"]" <<<"$out") && well_formed "$FIRST" && [[ ! "$FIRST" < "$CREATED" ]]'
mv "$T/vol1.rec" "$T/state/volumes/vol1.json"
K=$T/state/keys
cp "$K/$VICTIM.json" "$T/victim.json"

# --- one bad key file at a time, in place of the victim's ---
big() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["description"]="x"*70000; print(json.dumps(d))' "$T/victim.json"; }
n=0
for kind in garbage truncated oversized directory symlink fifo misnamed; do
        rm -rf "${K:?}/$VICTIM.json"
        case $kind in
        garbage) printf '\001\002garbage' >"$K/$VICTIM.json" ;;
        truncated) head -c 100 "$T/victim.json" >"$K/$VICTIM.json" ;;
        oversized) big >"$K/$VICTIM.json" ;;
        directory) mkdir "$K/$VICTIM.json" ;;
        symlink) ln -s "$T/victim.json" "$K/$VICTIM.json" ;;
        fifo) mkfifo "$K/$VICTIM.json" ;;
        misnamed) cp "$K/$APP1.json" "$K/$VICTIM.json" ;;
        esac
        expect 0 "$kind key file: key list answers" -- E --json key list
        check "$kind: the victim is listed unavailable, its file named" \
                '[ "$(jq_ "[(k[\"state\"], \"$K/$VICTIM.json\" in (k[\"description\"] or \"\")) for k in d if k[\"id\"] == \"$VICTIM\"]" <<<"$out")" = "[('"'"'unavailable'"'"', True)]" ]'
        check "$kind: the other keys are listed as they are" \
                '[ "$(jq_ "sorted((k[\"alias\"], k[\"state\"]) for k in d if k[\"alias\"] in (\"app1\", \"evs/default\"))" <<<"$out")" = "[('"'"'app1'"'"', '"'"'enabled'"'"'), ('"'"'evs/default'"'"', '"'"'enabled'"'"')]" ]'
        expect 0 "$kind: key show evs/default" -- E key show evs/default
        expect 0 "$kind: key show app1" -- E key show app1
        n=$((n + 1))
        expect 0 "$kind: key create" -- E key create "new$n"
        expect 0 "$kind: volume show vol1 (its key is fine)" -- E --json volume show "$T/vol1.img"
        check "$kind: vol1's key is enabled" '[ "$(jq_ "d[\"key_state\"]" <<<"$out")" = enabled ]'
        expect 1 "$kind: key show of the victim is refused" -- E key show "$VICTIM"
        check "$kind: the reason names the file" '[[ "$err" == *"$K/$VICTIM.json"* ]]'
        check "$kind: a warning in the daemon's log names the file" \
                'grep -q "Backend local: key file $K/$VICTIM.json .*$VICTIM is shown as unavailable" "$T/daemon.log"'
done
check "each reason was logged once, however often the keys were listed" \
        '[ -z "$(grep "Backend local: key file" "$T/daemon.log" | sort | uniq -d)" ]'
cat "$T/daemon.log" >>"$T/daemon.all"; : >"$T/daemon.log"
rm -rf "${K:?}/$VICTIM.json"
cp "$T/victim.json" "$K/$VICTIM.json"
expect 0 "restored, the victim answers again" -- E --json key show victim
check "enabled" '[ "$(jq_ "d[\"state\"]" <<<"$out")" = enabled ]'

# --- a copy of a key file under another name, its id edited: the alias is ambiguous and refused ---
COPY=11111111-2222-4333-8444-555555555555
sed "s/$VICTIM/$COPY/" "$T/victim.json" >"$K/$COPY.json"
expect 1 "an alias held by two key files is refused" -- E key show victim
check "the reason says so" '[[ "$err" == *"held by two key files"* ]]'
expect 0 "by id the original still answers" -- E key show "$VICTIM"
rm -f "$K/$COPY.json"

# --- state records that are not regular files do not hang the daemon either ---
mkfifo "$T/state/volumes/fifo.json"
mkdir -p "$T/state/images" && mkfifo "$T/state/images/img-000000000000.json"
expect 0 "volume list with a FIFO record answers" -- E --json volume list
check "the FIFO's volume is listed as unknown" \
        '[ "$(jq_ "[(v[\"state\"], \"not a regular file\" in v[\"last_error\"]) for v in d if v[\"id\"] == \"fifo\"]" <<<"$out")" = "[('"'"'unknown'"'"', True)]" ]'
expect 0 "image list with a FIFO record answers" -- E image list
rm -f "$T/state/volumes/fifo.json" "$T/state/images/img-000000000000.json"

# --- corrupt image, server and AS-configuration records: listed as unreadable (never dropped), show refused
# naming the file, a warning on use and at start, nothing on disk changed ---
head -c 1000000 /dev/urandom >"$T/src.raw"
expect 0 "image import base" -- E --json image import "$T/src.raw" --name base --key app1
IMG=$(jq_ 'd["id"]' <<<"$out")
truncate -s 40M "$T/sys.img"
expect 0 "server create web1" -- timeout 60 "$EVSCTL" --json server create web1 --image base --system-disk "$T/sys.img"
expect 0 "as-config create cfg1 from web1" -- E --json as-config create cfg1 --from-server web1
BADIMG=img-0123456789abcdef
printf '\001\002garbage' >"$T/state/images/$BADIMG.json"
printf '{"name": "bad", "image": ' >"$T/state/servers/bad.json"
cp "$T/state/servers/web1.json" "$T/state/servers/misnamed.json" # valid JSON, but of another name
printf '[1, 2]' >"$T/state/as-configs/badcfg.json"
records_sum() { cat "$T/state/images/$BADIMG.json" "$T/state/servers/bad.json" "$T/state/servers/misnamed.json" "$T/state/as-configs/badcfg.json" | sha256sum; }
records_before=$(records_sum)
: >"$T/daemon.log"
expect 0 "image list with a corrupt record" -- E --json image list
check "base listed, unreadable null; the corrupt one listed by id, its file named" \
        '[ "$(jq_ "[(i[\"id\"], i[\"name\"], i[\"unreadable\"]) for i in d]" <<<"$out")" = "[('"'"'$IMG'"'"', '"'"'base'"'"', None), ('"'"'$BADIMG'"'"', None, '"'"'record $T/state/images/$BADIMG.json is unreadable: not a valid record'"'"')]" ]'
check "the corrupt image's key state is unknown" '[ "$(jq_ "[i[\"key_state\"] for i in d if i[\"id\"] == \"$BADIMG\"]" <<<"$out")" = "['"'"'unknown'"'"']" ]'
expect 0 "image list (text)" -- E image list
check "the row says unreadable, a line names the file" \
        'grep -q "^$BADIMG .*unreadable" <<<"$out" && [[ "$err" == *"evsctl: image $BADIMG: record $T/state/images/$BADIMG.json is unreadable: not a valid record."* ]]'
expect 1 "image show of the corrupt one is refused" -- E image show "$BADIMG"
check "one line naming the file" '[ "$err" = "evsctl: Image $BADIMG: record $T/state/images/$BADIMG.json is unreadable: not a valid record." ]'
expect 0 "image show base still answers" -- E image show base
expect 0 "server list with corrupt records" -- E --json server list
check "bad and misnamed: their files named, in unreadable and in the warning" \
        '[ "$(jq_ "[(v[\"id\"], v[\"unreadable\"]) for v in d if v[\"unreadable\"] and v[\"warning\"] == v[\"unreadable\"]]" <<<"$out")" = "[('"'"'bad'"'"', '"'"'record $T/state/servers/bad.json is unreadable: not a valid record'"'"'), ('"'"'misnamed'"'"', '"'"'record $T/state/servers/misnamed.json is unreadable: not a valid record'"'"')]" ]'
check "web1's record is read (its image named), the others are unreadable" \
        '[ "$(jq_ "[(v[\"id\"], v[\"image_name\"], v[\"state\"] == \"unknown\", v[\"unreadable\"] is not None) for v in d]" <<<"$out")" = "[('"'"'bad'"'"', None, True, True), ('"'"'misnamed'"'"', None, True, True), ('"'"'web1'"'"', '"'"'base'"'"', False, False)]" ]'
expect 1 "server show bad is refused" -- E server show bad
check "one line naming the file" '[ "$err" = "evsctl: Server bad: record $T/state/servers/bad.json is unreadable: not a valid record." ]'
expect 1 "server delete bad is refused too" -- E server delete bad
expect 0 "as-config list with a corrupt record" -- E --json as-config list
check "cfg1 listed as it is, badcfg listed unreadable, its file named" \
        '[ "$(jq_ "[(c[\"id\"], c[\"image_name\"], c[\"unreadable\"]) for c in d]" <<<"$out")" = "[('"'"'badcfg'"'"', None, '"'"'record $T/state/as-configs/badcfg.json is unreadable: not a valid record'"'"'), ('"'"'cfg1'"'"', '"'"'base'"'"', None)]" ]'
expect 0 "as-config list (text)" -- E as-config list
check "the row says unreadable, a line names the file" \
        'grep -q "^badcfg .*unreadable" <<<"$out" && [[ "$err" == *"evsctl: AS configuration badcfg: record $T/state/as-configs/badcfg.json is unreadable"* ]]'
expect 1 "as-config show badcfg is refused" -- E as-config show badcfg
check "one line naming the file" '[ "$err" = "evsctl: AS configuration badcfg: record $T/state/as-configs/badcfg.json is unreadable: not a valid record." ]'
expect 1 "as-config create over the corrupt name is refused, naming the file" -- E as-config create badcfg --from-server web1
check "the reason names the file" '[[ "$err" == *"record $T/state/as-configs/badcfg.json is unreadable"* ]]'
check "the daemon warned on use, naming each file" \
        'grep -q "Image $BADIMG: record $T/state/images/$BADIMG.json is unreadable" "$T/daemon.log" && grep -q "Server bad: record $T/state/servers/bad.json is unreadable" "$T/daemon.log" && grep -q "AS configuration badcfg: record $T/state/as-configs/badcfg.json is unreadable" "$T/daemon.log"'
check "nothing on disk was changed" '[ "$(records_sum)" = "$records_before" ]'

# --- a corrupt volume record: listed as unknown, named in a warning at start and on use ---
cp "$T/state/volumes/vol1.json" "$T/vol1.json"
printf '{"id": "vol1", "device": ' >"$T/state/volumes/vol1.json"
expect 0 "volume list with a corrupt record" -- E --json volume list
check "vol1 is listed, state unknown, its record named" \
        '[ "$(jq_ "[(v[\"state\"], \"$T/state/volumes/vol1.json\" in v[\"last_error\"]) for v in d if v[\"id\"] == \"vol1\"]" <<<"$out")" = "[('"'"'unknown'"'"', True)]" ]'
expect 0 "volume show vol1 shows it as unknown" -- E --json volume show vol1
check "state unknown, the reason names the record" \
        '[ "$(jq_ "d[\"state\"]" <<<"$out")" = unknown ] && [[ "$(jq_ "d[\"last_error\"]" <<<"$out")" == *"record $T/state/volumes/vol1.json is unreadable: not a valid record"* ]]'
check "the daemon warned on use, naming the file" 'grep -q "Volume vol1: record $T/state/volumes/vol1.json is unreadable" "$T/daemon.log"'
stop
: >"$T/daemon.log"
start
check "the daemon warns at start, naming the file" \
        'for _ in $(seq 20); do grep -q "Volume vol1: record $T/state/volumes/vol1.json is unreadable.*listed with state unknown" "$T/daemon.log" && break; sleep 0.1; done; grep -q "listed with state unknown" "$T/daemon.log"'
check "the daemon warns at start for the image, server and AS-configuration records too, naming the files" \
        'grep -q "Image $BADIMG: record $T/state/images/$BADIMG.json is unreadable.*listed as unreadable" "$T/daemon.log" && grep -q "Server misnamed: record $T/state/servers/misnamed.json is unreadable.*listed as unreadable" "$T/daemon.log" && grep -q "AS configuration badcfg: record $T/state/as-configs/badcfg.json is unreadable" "$T/daemon.log"'
check "still nothing on disk changed" '[ "$(records_sum)" = "$records_before" ]'
rm -f "$T/state/images/$BADIMG.json" "$T/state/servers/bad.json" "$T/state/servers/misnamed.json" "$T/state/as-configs/badcfg.json"
expect 0 "removed, server list is web1 alone" -- E --json server list
check "web1" '[ "$(jq_ "[v[\"id\"] for v in d]" <<<"$out")" = "['"'"'web1'"'"']" ]'
cp "$T/vol1.json" "$T/state/volumes/vol1.json"
expect 0 "restored, vol1 shows again" -- E --json volume show vol1
check "detached, with its key" '[ "$(jq_ "d[\"state\"],d[\"key_id\"]" <<<"$out")" = "('"'"'detached'"'"', '"'"'$APP1'"'"')" ]'
check "created is the same after a restart" '[ "$(jq_ "d[\"created\"]" <<<"$out")" = "$CREATED" ]'

# --- the root key: never silently made again for a store that holds keys ---
stop
sum_keys() { cat "$K"/*.json | sha256sum; }
keys_before=$(sum_keys)
mv "$T/state/root.key" "$T/root.key.saved"
start
expect 6 "with the root key missing, key list is refused" -- E key list
check "the reason names the root key and where it was expected" '[[ "$err" == *"root key $T/state/root.key is missing"* ]] && [[ "$err" == *"restore it"* ]]'
expect 6 "key create is refused" -- E key create after
expect 6 "key show evs/default is refused" -- E key show evs/default
check "no new root key was made" '[ ! -e "$T/state/root.key" ]'
check "no key file was written" '[ "$(sum_keys)" = "$keys_before" ]'
mv "$T/root.key.saved" "$T/state/root.key"
expect 0 "restored, the keys answer again" -- E --json key show app1
check "app1 is enabled" '[ "$(jq_ "d[\"id\"],d[\"state\"]" <<<"$out")" = "('"'"'$APP1'"'"', '"'"'enabled'"'"')" ]'

stop
check "daemon exits cleanly on SIGTERM" '[ "$stop_rc" = 0 ]'
cat "$T/daemon.log" >>"$T/daemon.all"
check "no sanitizer report from the daemon" '! grep -q "Sanitizer\|runtime error" "$T/daemon.all"'
[ "$failed" = 0 ] || { echo "--- daemon log"; cat "$T/daemon.all"; }
tap_done
