#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Host integration test of servers, images made from a server and AS configurations: evs-cryptd on
# temporary paths, disks are image files. Without device-mapper the volumes cannot attach: servers are
# created detached with a warning (tests/vm/test-server.sh proves the attached path).
#   test-servers.sh EVS_CRYPTD EVSCTL EVS_UNWRAP_TEST
set -uo pipefail

DAEMON=$(readlink -f "$1") EVSCTL=$(readlink -f "$2") UNWRAP=$(readlink -f "$3")
for tool in cryptsetup mkfs.ext4 python3; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done

T=$(mktemp -d /tmp/evs-servers.XXXXXX)
chmod 0755 "$T"
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

cat >"$T/evs-cryptd.conf" <<CONF
[Daemon]
StateDirectory=$T/state
BusPath=$T/run/bus
CONF
"$DAEMON" --config "$T/evs-cryptd.conf" 2>"$T/daemon.log" &
PID=$!
for _ in $(seq 100); do [ -S "$T/run/bus" ] && break; sleep 0.05; done
export EVS_BUS=$T/run/bus

. "$(dirname "$(readlink -f "$0")")/../lib/tap.sh"
# j EXPR: a Python expression over the JSON in $out (d), printed with str().
j() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1" <<<"$out"; }
sum() { sha256sum "$1" | cut -d" " -f1; }
E=$EVSCTL

# decrypt DISK OUT: the plaintext of an EVS volume's data area, decrypted offline by libcryptsetup's own
# userspace code (the volume key in a detached header with offset 0 over a copy of the data area).
decrypt() {
        "$UNWRAP" "$T/evs-cryptd.conf" "$1" >"$T/dk.bin" &&
                cryptsetup luksDump -q --dump-volume-key --volume-key-file "$T/vk.bin" --key-file "$T/dk.bin" "$1" >/dev/null &&
                tail -c +16777217 "$1" >"$2" && rm -f "$T/hdr0" && truncate -s 16M "$T/hdr0" &&
                cryptsetup luksFormat -q --type luks2 --header "$T/hdr0" --offset 0 --cipher aes-xts-plain64 --key-size 512 \
                        --sector-size "$(cryptsetup luksDump "$1" | sed -n 's/.*sector: \([0-9]*\) \[bytes\].*/\1/p' | head -1)" \
                        --volume-key-file "$T/vk.bin" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$T/dk.bin" "$2" &&
                cryptsetup reencrypt -q --decrypt --header "$T/hdr0" --force-offline-reencrypt --key-file "$T/dk.bin" "$2"
        local rc=$?
        rm -f "$T/dk.bin" "$T/vk.bin" "$T/hdr0"
        return $rc
}
token_field() { cryptsetup token export --token-id 0 "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }

# --- setup: keys and an image ---
expect 0 "create key k1" -- "$E" --json key create k1
K1=$(j 'd["id"]')
expect 0 "create key k2" -- "$E" --json key create k2
K2=$(j 'd["id"]')
head -c 3000001 /dev/urandom >"$T/src.raw"
SRC=$(sum "$T/src.raw")
expect 0 "import image base with k1" -- "$E" --json image import "$T/src.raw" --name base --key k1
IMG=$(j 'd["id"]')
for d in sys d1 d2 d3 sys2 e1 e2 e3 small sys3 sys4; do truncate -s 40M "$T/$d.img"; done
truncate -s 16M "$T/small.img"
head -c 1048576 /dev/urandom >"$T/plain-data" && dd if="$T/plain-data" of="$T/d3.img" conv=notrunc 2>/dev/null
D3=$(sum "$T/d3.img")

# --- refusals; nothing is formatted by a refused create ---
expect 2 "server create without --image or --as-config" -- "$E" server create web1 --system-disk "$T/sys.img"
expect 2 "server create with both --image and --as-config" -- "$E" server create web1 --image base --as-config x --system-disk "$T/sys.img"
expect 2 "server create without --system-disk" -- "$E" server create web1 --image base
expect 2 "invalid server name" -- "$E" server create 'bad name' --image base --system-disk "$T/sys.img"
expect 2 "server name with a leading dot" -- "$E" server create .web1 --image base --system-disk "$T/sys.img"
expect 2 "server name longer than 48 characters" -- "$E" server create "$(printf 'a%.0s' $(seq 49))" --image base --system-disk "$T/sys.img"
expect 2 "malformed --data-disk" -- "$E" server create web1 --image base --system-disk "$T/sys.img" --data-disk "$T/d1.img:key="
expect 4 "unknown image" -- "$E" server create web1 --image nosuchimage --system-disk "$T/sys.img"
check "reason: no image" '[[ "$err" == *"No image nosuchimage"* ]]'
expect 4 "a missing disk" -- "$E" server create web1 --image base --system-disk "$T/sys.img" --data-disk "$T/nosuch.img"
expect 2 "a system disk too small for the image" -- "$E" server create web1 --image base --system-disk "$T/small.img"
check "reason: too small" '[[ "$err" == *"is too small"* ]]'
expect 2 "the same disk twice" -- "$E" server create web1 --image base --system-disk "$T/sys.img" --data-disk "$T/sys.img"
check "reason: given twice" '[[ "$err" == *"given twice"* ]]'
mkfs.ext4 -q -F "$T/e3.img"
E3=$(sum "$T/e3.img")
expect 8 "a data disk holding ext4 is refused" -- "$E" server create web1 --image base --system-disk "$T/sys.img" --data-disk "$T/d1.img" --data-disk "$T/e3.img"
check "reason names ext4" '[[ "$err" == *"ext4"* ]]'
check "the ext4 disk is unchanged" '[ "$(sum "$T/e3.img")" = "$E3" ]'
check "the system disk was not formatted (every disk is checked first)" '! cryptsetup isLuks "$T/sys.img" && ! cryptsetup isLuks "$T/d1.img"'
expect 0 "disable k2" -- "$E" key disable k2
expect 3 "a data disk with a disabled key is refused" -- "$E" server create web1 --image base --system-disk "$T/sys.img" --data-disk "$T/d1.img:key=k2"
check "reason: k2 of data disk 1 is disabled" '[[ "$err" == *"k2 of data disk 1 is disabled"* ]]'
check "nothing formatted" '! cryptsetup isLuks "$T/sys.img" && ! cryptsetup isLuks "$T/d1.img"'
expect 0 "enable k2" -- "$E" key enable k2
expect 0 "disable k1 (the image's key)" -- "$E" key disable k1
expect 3 "an image whose CMK is disabled makes no server" -- "$E" server create web1 --image base --system-disk "$T/sys.img"
check "reason names the image and the state" '[[ "$err" == *"of image base is disabled"* ]]'
check "the system disk was not formatted" '! cryptsetup isLuks "$T/sys.img"'
expect 0 "enable k1" -- "$E" key enable k1
expect 0 "schedule k1 for deletion" -- "$E" key schedule-deletion k1 --days 7
expect 3 "an image whose CMK is pending deletion makes no server" -- "$E" server create web1 --image base --system-disk "$T/sys.img"
check "reason: pending-deletion" '[[ "$err" == *"of image base is pending-deletion"* ]]'
expect 0 "cancel k1's deletion" -- "$E" key cancel-deletion k1
expect 0 "enable k1 again" -- "$E" key enable k1
expect 4 "an unknown data-disk key" -- "$E" server create web1 --image base --system-disk "$T/sys.img" --data-disk "$T/d1.img:key=nosuchkey"
check "reason: no key" '[[ "$err" == *"no key nosuchkey (for data disk 1)"* ]]'
check "nothing formatted" '! cryptsetup isLuks "$T/sys.img"'

# --- a server from an image ---
expect 0 "server create web1: system disk from base, data disks on evs/default, k2 and plain" -- \
        "$E" --json server create web1 --image base --system-disk "$T/sys.img" --data-disk "$T/d1.img" \
        --data-disk "$T/d2.img:key=k2" --data-disk "$T/d3.img:plain"
check "name, image, image name" '[ "$(j "d[\"name\"], d[\"image\"], d[\"image_name\"], d[\"as_config\"]")" = "('"'"'web1'"'"', '"'"'$IMG'"'"', '"'"'base'"'"', None)" ]'
check "system disk: volume web1-sys, the image's CMK and cipher" \
        '[ "$(j "[d[\"system_disk\"][k] for k in (\"volume_id\",\"device\",\"key_id\",\"key_alias\",\"key_state\",\"cipher\")]")" = "['"'"'web1-sys'"'"', '"'"'$T/sys.img'"'"', '"'"'$K1'"'"', '"'"'k1'"'"', '"'"'enabled'"'"', '"'"'aes-xts-plain64'"'"']" ]'
check "data disks: web1-data1 on evs/default, web1-data2 on k2, a plain one" \
        '[ "$(j "[(x[\"volume_id\"], x[\"key_alias\"], x[\"plain\"]) for x in d[\"data_disks\"]]")" = "[('"'"'web1-data1'"'"', '"'"'evs/default'"'"', False), ('"'"'web1-data2'"'"', '"'"'k2'"'"', False), (None, None, True)]" ]'
check "data disk fields: volume_id, device, key_id, plain" \
        '[ "$(j "[sorted(k for k in (\"volume_id\",\"device\",\"key_id\",\"plain\") if k in x) for x in d[\"data_disks\"]]")" = "$(printf "[%s, %s, %s]" "['"'"'device'"'"', '"'"'key_id'"'"', '"'"'plain'"'"', '"'"'volume_id'"'"']" "['"'"'device'"'"', '"'"'key_id'"'"', '"'"'plain'"'"', '"'"'volume_id'"'"']" "['"'"'device'"'"', '"'"'key_id'"'"', '"'"'plain'"'"', '"'"'volume_id'"'"']")" ]'
check "data disk 2 names k2's id" '[ "$(j "d[\"data_disks\"][1][\"key_id\"]")" = "$K2" ]'
check "state: attached with device-mapper, else detached with the reason" \
        '[ "$(j "d[\"state\"]")" = attached ] || { [ "$(j "d[\"state\"]")" = detached ] && [[ "$(j "d[\"warning\"]")" == *"no device-mapper"* ]]; }'
check "system disk header: label web1-sys, the image's CMK, bound to web1-sys" \
        'cryptsetup luksDump "$T/sys.img" | grep -q "^Label:[[:space:]]*web1-sys$" && [ "$(token_field "$T/sys.img" evs_key_id)" = "$K1" ] && [ "$(token_field "$T/sys.img" evs_volume_id)" = web1-sys ]'
check "data disk headers: web1-data1, web1-data2 on k2" \
        'cryptsetup luksDump "$T/d1.img" | grep -q "^Label:[[:space:]]*web1-data1$" && [ "$(token_field "$T/d2.img" evs_key_id)" = "$K2" ]'
check "the plain disk was not touched" '[ "$(sum "$T/d3.img")" = "$D3" ] && ! cryptsetup isLuks "$T/d3.img"'
check "record written as servers/web1.json" '[ -f "$T/state/servers/web1.json" ] && [ "$(stat -c %a "$T/state/servers/web1.json")" = 600 ]'
check "the system disk decrypts to the image's source, then zeros to the sector's end" \
        'decrypt "$T/sys.img" "$T/plain.bin" && [ "$(head -c 3000001 "$T/plain.bin" | sha256sum | cut -d" " -f1)" = "$SRC" ] && [ "$(head -c 3002368 "$T/plain.bin" | tail -c +3000002 | tr -d "\0" | wc -c)" = 0 ]'
rm -f "$T/plain.bin"
expect 1 "a second server of the same name" -- "$E" server create web1 --image base --system-disk "$T/sys2.img"
check "reason: exists" '[[ "$err" == *"named web1 exists already"* ]]'
expect 5 "a disk of another server" -- "$E" server create web2 --image base --system-disk "$T/sys2.img" --data-disk "$T/d3.img:plain"
check "reason names the owner" '[[ "$err" == *"is a disk of server web1"* ]]'
expect 0 "server show web1 (table)" -- "$E" server show web1
check "show names the system disk and the plain disk" '[[ "$out" == *"web1-sys on $T/sys.img, key k1 (enabled)"* ]] && [[ "$out" == *"plain (not encrypted)"* ]]'
expect 0 "server list --json" -- "$E" --json server list
check "list: web1 with its state" '[ "$(j "[(s[\"name\"], s[\"state\"] in (\"attached\", \"detached\")) for s in d]")" = "[('"'"'web1'"'"', True)]" ]'
check "list: every server has an id, its name (--json)" '[ "$(j "[(s[\"id\"], s[\"name\"]) for s in d]")" = "[('"'"'web1'"'"', '"'"'web1'"'"')]" ]'
expect 0 "server list (table)" -- "$E" server list
check "table: header and one row" '[ "$(wc -l <<<"$out")" = 2 ] && grep -q "^SERVER" <<<"$out"'
check "table headers have no spaces (SYSTEM_DISK, DATA_DISKS)" '[ "$(head -n 1 <<<"$out" | wc -w)" = 6 ] && head -n 1 <<<"$out" | grep -q "SYSTEM_DISK .*DATA_DISKS"'
expect 4 "server show of an unknown server" -- "$E" server show nosuchserver

# --- an image from the server ---
expect 2 "image create without --name" -- "$E" image create --from-server web1
expect 4 "image create from an unknown server" -- "$E" image create --from-server nosuchserver --name x
expect 1 "image create under a taken name" -- "$E" image create --from-server web1 --name base
expect 0 "image create --from-server web1" -- "$E" --json image create --from-server web1 --name fromweb1
IMG2=$(j 'd["id"]') IMG2FILE=$(j 'd["path"]')
check "same CMK and cipher as the system disk, source server:web1, size of its data area" \
        '[ "$(j "d[\"key_id\"], d[\"key_alias\"], d[\"cipher\"], d[\"source\"], d[\"size\"]")" = "('"'"'$K1'"'"', '"'"'k1'"'"', '"'"'aes-xts-plain64'"'"', '"'"'server:web1'"'"', 25165824)" ]'
check "its header names k1, bound to its own id" '[ "$(token_field "$IMG2FILE" evs_key_id)" = "$K1" ] && [ "$(token_field "$IMG2FILE" evs_volume_id)" = "$IMG2" ]'
check "it decrypts to the original source bytes, then zeros to the sector's end" \
        'decrypt "$IMG2FILE" "$T/plain.bin" && [ "$(head -c 3000001 "$T/plain.bin" | sha256sum | cut -d" " -f1)" = "$SRC" ] && [ "$(head -c 3002368 "$T/plain.bin" | tail -c +3000002 | tr -d "\0" | wc -c)" = 0 ]'
rm -f "$T/plain.bin"
expect 0 "a server from the new image" -- "$E" --json server create web3 --image fromweb1 --system-disk "$T/sys3.img"
check "its system disk is on k1 too" '[ "$(j "d[\"system_disk\"][\"key_id\"], d[\"system_disk\"][\"cipher\"]")" = "('"'"'$K1'"'"', '"'"'aes-xts-plain64'"'"')" ]'
check "and holds the source" \
        'decrypt "$T/sys3.img" "$T/plain.bin" && [ "$(head -c 3000001 "$T/plain.bin" | sha256sum | cut -d" " -f1)" = "$SRC" ]'
rm -f "$T/plain.bin"
# A server whose system disk is not encrypted: a hand-made record (create never makes one), and a
# system disk whose header was wiped.
mkdir -p "$T/state/servers"
cat >"$T/state/servers/handmade.json" <<JSON
{ "name": "handmade", "image": "$IMG", "image_name": "base", "as_config": null, "created": 0,
  "system_disk": { "volume_id": null, "device": "$T/sys4.img", "plain": true }, "data_disks": [] }
JSON
chmod 0600 "$T/state/servers/handmade.json"
expect 1 "image create from a server whose system disk is plain" -- "$E" image create --from-server handmade --name x
check "reason: not encrypted" '[[ "$err" == *"system disk $T/sys4.img is not encrypted"* ]]'
expect 1 "as-config create from it" -- "$E" as-config create cfgx --from-server handmade
check "reason: not encrypted" '[[ "$err" == *"is not encrypted"* ]]'
dd if=/dev/zero of="$T/sys3.img" bs=1M count=16 conv=notrunc 2>/dev/null
expect 1 "image create from a server whose system-disk header was wiped" -- "$E" image create --from-server web3 --name y
check "reason: not encrypted" '[[ "$err" == *"is not encrypted"* ]]'
expect 0 "server show web3 flags the lost header" -- "$E" --json server show web3
check "warning names the disk" '[[ "$(j "d[\"warning\"]")" == *"does not hold volume web3-sys"* ]]'
check "no image left behind by the refusals" '[ "$(ls "$T/state/images" | grep -c "\.img$")" = 2 ]'

# --- AS configurations ---
expect 2 "as-config create without --from-server" -- "$E" as-config create asc
expect 2 "invalid AS configuration name" -- "$E" as-config create 'bad name' --from-server web1
expect 4 "as-config create from an unknown server" -- "$E" as-config create asc --from-server nosuchserver
expect 0 "as-config create asc --from-server web1" -- "$E" --json as-config create asc --from-server web1
check "records the image, the system disk's CMK and cipher" \
        '[ "$(j "d[\"image\"], d[\"source_server\"], d[\"system_disk\"][\"key_id\"], d[\"system_disk\"][\"cipher\"]")" = "('"'"'$IMG'"'"', '"'"'web1'"'"', '"'"'$K1'"'"', '"'"'aes-xts-plain64'"'"')" ]'
check "records each data disk's size and CMK or plain" \
        '[ "$(j "[(x[\"size\"], x[\"key_alias\"], x[\"plain\"]) for x in d[\"data_disks\"]]")" = "[(41943040, '"'"'evs/default'"'"', False), (41943040, '"'"'k2'"'"', False), (41943040, None, True)]" ]'
check "record written as as-configs/asc.json" '[ -f "$T/state/as-configs/asc.json" ]'
expect 1 "a second AS configuration of the same name" -- "$E" as-config create asc --from-server web1
expect 0 "as-config show asc" -- "$E" as-config show asc
expect 0 "as-config list --json" -- "$E" --json as-config list
check "list: asc" '[ "$(j "[c[\"name\"] for c in d]")" = "['"'"'asc'"'"']" ]'
check "list: its id is its name" '[ "$(j "[c[\"id\"] for c in d]")" = "['"'"'asc'"'"']" ]'
expect 0 "as-config list (table)" -- "$E" as-config list
check "table headers have no spaces (SOURCE_SERVER, KEY_STATE)" '[ "$(head -n 1 <<<"$out" | wc -w)" = 6 ] && head -n 1 <<<"$out" | grep -q "SOURCE_SERVER .*KEY_STATE"'
expect 4 "as-config show of an unknown configuration" -- "$E" as-config show nosuchconfig
expect 4 "server create from an unknown configuration" -- "$E" server create web2 --as-config nosuchconfig --system-disk "$T/sys2.img"
expect 2 "too few data disks for asc" -- "$E" server create web2 --as-config asc --system-disk "$T/sys2.img" --data-disk "$T/e1.img" --data-disk "$T/e2.img"
check "reason: the count" '[[ "$err" == *"has 3 data disks, 2 given"* ]]'
check "nothing formatted" '! cryptsetup isLuks "$T/sys2.img" && ! cryptsetup isLuks "$T/e1.img"'
expect 2 "a key named with --as-config" -- "$E" server create web2 --as-config asc --system-disk "$T/sys2.img" --data-disk "$T/e1.img:key=k2" --data-disk "$T/e2.img" --data-disk "$T/e3.img"
expect 2 "a data disk smaller than the configuration's" -- "$E" server create web2 --as-config asc --system-disk "$T/sys2.img" --data-disk "$T/small.img" --data-disk "$T/e2.img" --data-disk "$T/e3.img"
expect 0 "disable k2" -- "$E" key disable k2
expect 3 "a configuration whose data-disk CMK is disabled launches nothing" -- "$E" server create web2 --as-config asc --system-disk "$T/sys2.img" --data-disk "$T/e1.img" --data-disk "$T/e2.img" --data-disk "$T/e3.img"
check "reason: data disk 2 of asc" '[[ "$err" == *"k2 of data disk 2 of AS configuration asc is disabled"* ]]'
expect 0 "enable k2" -- "$E" key enable k2
expect 0 "disable k1" -- "$E" key disable k1
expect 3 "a configuration whose image CMK is disabled launches nothing" -- "$E" server create web2 --as-config asc --system-disk "$T/sys2.img" --data-disk "$T/e1.img" --data-disk "$T/e2.img" --data-disk "$T/e3.img"
check "nothing formatted" '! cryptsetup isLuks "$T/sys2.img" && ! cryptsetup isLuks "$T/e1.img"'
expect 0 "the existing server still shows, its key disabled" -- "$E" --json server show web1
check "key_state disabled" '[ "$(j "d[\"system_disk\"][\"key_state\"]")" = disabled ]'
expect 0 "enable k1" -- "$E" key enable k1
expect 8 "an ext4 disk where the configuration encrypts is refused" -- "$E" server create web2 --as-config asc --system-disk "$T/sys2.img" --data-disk "$T/e3.img" --data-disk "$T/e2.img" --data-disk "$T/e1.img"
check "nothing formatted" '! cryptsetup isLuks "$T/sys2.img" && [ "$(sum "$T/e3.img")" = "$E3" ]'
expect 0 "server create web2 --as-config asc (the ext4 disk where the configuration keeps a plain one)" -- \
        "$E" --json server create web2 --as-config asc --system-disk "$T/sys2.img" --data-disk "$T/e1.img" --data-disk "$T/e2.img" --data-disk "$T/e3.img"
check "launched from asc" '[ "$(j "d[\"as_config\"], d[\"image\"]")" = "('"'"'asc'"'"', '"'"'$IMG'"'"')" ]'
check "system disk: the source's CMK and cipher" '[ "$(j "d[\"system_disk\"][\"key_id\"], d[\"system_disk\"][\"cipher\"]")" = "('"'"'$K1'"'"', '"'"'aes-xts-plain64'"'"')" ]'
check "data disks follow the configuration (evs/default, k2, plain)" \
        '[ "$(j "[(x[\"volume_id\"], x[\"key_alias\"], x[\"cipher\"], x[\"plain\"]) for x in d[\"data_disks\"]]")" = "[('"'"'web2-data1'"'"', '"'"'evs/default'"'"', '"'"'aes-xts-plain64'"'"', False), ('"'"'web2-data2'"'"', '"'"'k2'"'"', '"'"'aes-xts-plain64'"'"', False), (None, None, None, True)]" ]'
check "the plain disk keeps its ext4" '[ "$(sum "$T/e3.img")" = "$E3" ]'
check "the AS-launched system disk holds the image" \
        'decrypt "$T/sys2.img" "$T/plain.bin" && [ "$(head -c 3000001 "$T/plain.bin" | sha256sum | cut -d" " -f1)" = "$SRC" ]'
rm -f "$T/plain.bin"
expect 0 "web1 and web2 side by side" -- "$E" --json server list
check "same modes: system key, data keys, plain" \
        '[ "$(j "len(set(str([s[\"system_disk\"][\"key_id\"], s[\"system_disk\"][\"cipher\"]] + [(x[\"key_id\"], x[\"plain\"]) for x in s[\"data_disks\"]]) for s in d if s[\"name\"] in (\"web1\", \"web2\")))")" = 1 ]'

# --- a destroyed CMK: an image and an AS configuration that need it make no server ---
for d in sys5 f1 sys6 g1; do truncate -s 40M "$T/$d.img"; done
expect 0 "create key k3" -- "$E" --json key create k3
K3=$(j 'd["id"]')
expect 0 "import image doomed with k3" -- "$E" image import "$T/src.raw" --name doomed --key k3
expect 0 "server web5 with a data disk on k3" -- "$E" server create web5 --image base --system-disk "$T/sys5.img" --data-disk "$T/f1.img:key=k3"
expect 0 "as-config asc3 from web5" -- "$E" as-config create asc3 --from-server web5
expect 0 "schedule k3 for deletion" -- "$E" key schedule-deletion k3 --days 7
# The window passes: the deletion date moved into the past, the key is destroyed on its next access.
python3 - "$T/state/keys/$K3.json" <<'PY'
import json, os, sys
p = sys.argv[1]
d = json.load(open(p))
d["deletion_date"] = 1000000
open(p + ".new", "w").write(json.dumps(d))
os.chmod(p + ".new", 0o600)
os.rename(p + ".new", p)
PY
expect 0 "k3 shows destroyed" -- "$E" --json key show "$K3"
check "state destroyed" '[ "$(j "d[\"state\"]")" = destroyed ]'
expect 3 "an image whose CMK is destroyed makes no server" -- "$E" server create web6 --image doomed --system-disk "$T/sys6.img"
check "reason: destroyed" '[[ "$err" == *"of image doomed is destroyed"* ]]'
expect 3 "an AS configuration whose data-disk CMK is destroyed launches nothing" -- "$E" server create web6 --as-config asc3 --system-disk "$T/sys6.img" --data-disk "$T/g1.img"
check "reason: destroyed" '[[ "$err" == *"of data disk 1 of AS configuration asc3 is destroyed"* ]]'
check "nothing formatted" '! cryptsetup isLuks "$T/sys6.img" && ! cryptsetup isLuks "$T/g1.img"'
expect 0 "server show web5: its data disk's key destroyed" -- "$E" --json server show web5
check "key_state destroyed" '[ "$(j "d[\"data_disks\"][0][\"key_state\"]")" = destroyed ]'

# --- deletes ---
S1=$(sum "$T/sys.img") S2=$(sum "$T/d2.img")
expect 0 "server delete web1" -- "$E" --json server delete web1
check "shown detached" '[ "$(j "d[\"state\"]")" = detached ]'
check "record gone" '[ ! -e "$T/state/servers/web1.json" ]'
check "its disks and their data stay" '[ "$(sum "$T/sys.img")" = "$S1" ] && [ "$(sum "$T/d2.img")" = "$S2" ] && [ "$(sum "$T/d3.img")" = "$D3" ]'
expect 4 "delete again: not found" -- "$E" server delete web1
expect 0 "as-config delete asc" -- "$E" as-config delete asc
check "record gone" '[ ! -e "$T/state/as-configs/asc.json" ]'
expect 4 "as-config delete again: not found" -- "$E" as-config delete asc
expect 0 "the disks of a deleted server make a new server with --force" -- \
        "$E" --json server create web1 --image base --system-disk "$T/sys.img" --force
for s in web2 web3 web5 handmade; do "$E" server delete "$s" >/dev/null 2>&1; done

# --- a clean stop; under ASan/UBSan the daemon's own report lands in its log ---
kill "$PID"; wait "$PID"; rc=$?; PID=
check "daemon exits cleanly on SIGTERM" '[ "$rc" = 0 ]'
check "no sanitizer report from the daemon" '! grep -q "Sanitizer\|runtime error" "$T/daemon.log"'
[ "$failed" = 0 ] || { echo "--- daemon log"; cat "$T/daemon.log"; }

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
