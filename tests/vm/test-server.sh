#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Servers, images made from a server and AS configurations in a real kernel (run by tests/vm/evs-vm inside
# the guest): the image's data through the system disk's mapping, the CMKs and ciphers that follow the
# image and the AS configuration, a disabled image CMK that blocks new servers but not a running one.
# Disks (serial = the volume id each becomes, so that the serial check on attach passes):
#   vda web1-sys  vdb web1-data1  vdc web1-data2  vdd plain-disk
#   vde web2-sys  vdf web2-data1  vdg web2-data2  vdh web2-data3  vdi web3-sys  vdj web4-sys
set -u

T=/tmp/evs
mkdir -p "$T"
CONF=$T/evs-cryptd.conf
cat >"$CONF" <<CONF
[Daemon]
StateDirectory=/var/lib/evs-cryptd
BusPath=/run/evs-cryptd/bus
CONF
export EVS_BUS=/run/evs-cryptd/bus

. /usr/lib/evs-tests/tap.sh
# From compacted evsctl --json output: a top-level string field, the system disk object, data disk N.
field() { echo "$out" | sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }
sysdisk() { echo "$out" | sed -n 's/.*"system_disk":{\([^}]*\)}.*/\1/p'; }
datadisk() { echo "$out" | sed -n 's/.*"data_disks":\[\(.*\)\].*/\1/p' | sed 's/},{/}\n{/g' | sed -n "$1p"; }
# fld OBJECT KEY: a string field of one object, "null" for null.
fld() {
        echo "$1" | sed -n -e "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" -e "s/.*\"$2\":null.*/null/p" \
                -e "s/.*\"$2\":true.*/true/p" -e "s/.*\"$2\":false.*/false/p"
}
sum() { sha256sum "$1" | cut -d' ' -f1; }
headsum() { head -c "$2" "$1" | sha256sum | cut -d' ' -f1; }
# at DEVICE OFFSET_MIB LENGTH: the sum of LENGTH bytes at OFFSET_MIB MiB.
at() { dd if="$1" bs=1M skip="$2" count=1 2>/dev/null | head -c "$3" | sha256sum | cut -d' ' -f1; }

evs-cryptd --config "$CONF" >>"$T/daemon.log" 2>&1 &
DPID=$!
i=0
until evsctl status >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
t0=$(date +%s)

echo "# 1. an image, and a server from it: system disk, two data disks under different CMKs, a plain one"
head -c 5242999 /dev/urandom >"$T/src.raw"
SRC=$(sum "$T/src.raw")
head -c 1048576 /dev/urandom >"$T/plain.raw"
dd if="$T/plain.raw" of=/dev/vdd bs=1M conv=fsync 2>/dev/null
VDD=$(sum /dev/vdd)
expect_compact 0 "create key img1" evsctl key create img1
expect_compact 0 "create key data2" evsctl key create data2
expect_compact 0 "import the pattern as image base under img1" evsctl --json image import "$T/src.raw" --name base --key img1
IMG_KEY=$(field key_id) IMG_CIPHER=$(field cipher) IMG=$(field id)
check "image key and cipher known" '[ -n "$IMG_KEY" ] && [ "$IMG_CIPHER" = aes-xts-plain64 ]'
expect_compact 0 "server create web1" evsctl --json server create web1 --image base --system-disk /dev/vda \
        --data-disk /dev/vdb --data-disk /dev/vdc:key=data2 --data-disk /dev/vdd:plain
check "web1 is attached" '[ "$(field state)" = attached ]'
S=$(sysdisk)
check "system disk web1-sys is mapped at /dev/mapper/evs-web1-sys" \
        '[ "$(fld "$S" volume_id)" = web1-sys ] && [ "$(fld "$S" mapping)" = /dev/mapper/evs-web1-sys ] && [ -b /dev/mapper/evs-web1-sys ]'
check "its CMK and cipher are the image's" '[ "$(fld "$S" key_id)" = "$IMG_KEY" ] && [ "$(fld "$S" cipher)" = "$IMG_CIPHER" ]'
check "the header of /dev/vda names the image's CMK" 'cryptsetup token export --token-id 0 /dev/vda | grep -q "\"evs_key_id\":\"$IMG_KEY\""'
check "the image's pattern reads back through the system disk's mapping" '[ "$(headsum /dev/mapper/evs-web1-sys 5242999)" = "$SRC" ]'
D1=$(datadisk 1) D2=$(datadisk 2) D3=$(datadisk 3)
check "data disk 1: web1-data1 on evs/default, mapped" \
        '[ "$(fld "$D1" volume_id)" = web1-data1 ] && [ "$(fld "$D1" key_alias)" = evs/default ] && [ -b /dev/mapper/evs-web1-data1 ]'
check "data disk 2: web1-data2 on data2, mapped" \
        '[ "$(fld "$D2" volume_id)" = web1-data2 ] && [ "$(fld "$D2" key_alias)" = data2 ] && [ -b /dev/mapper/evs-web1-data2 ]'
check "data disks 1 and 2 have different CMKs, both unlike the image's" \
        '[ "$(fld "$D1" key_id)" != "$(fld "$D2" key_id)" ] && [ "$(fld "$D1" key_id)" != "$IMG_KEY" ] && [ "$(fld "$D2" key_id)" != "$IMG_KEY" ]'
check "data disk 3 is plain: no volume, no key, untouched" \
        '[ "$(fld "$D3" plain)" = true ] && [ "$(fld "$D3" volume_id)" = null ] && [ "$(fld "$D3" key_id)" = null ] && [ "$(sum /dev/vdd)" = "$VDD" ] && ! cryptsetup isLuks /dev/vdd'
check "the data disks take writes through their mappings" \
        'dd if=$T/plain.raw of=/dev/mapper/evs-web1-data2 bs=1M conv=fsync 2>/dev/null && [ "$(headsum /dev/mapper/evs-web1-data2 1048576)" = "$(sum $T/plain.raw)" ] && [ "$(headsum /dev/vdc 1048576)" != "$(sum $T/plain.raw)" ]'
expect_compact 0 "server list" evsctl --json server list
check "lists web1 attached" 'echo "$out" | grep -q "\"name\":\"web1\".*\"state\":\"attached\""'

echo "# 2. an image made from the server reproduces its data"
head -c 65536 /dev/urandom >"$T/marker"
MARK=$(sum "$T/marker")
dd if="$T/marker" of=/dev/mapper/evs-web1-sys bs=1M seek=20 conv=fsync 2>/dev/null
expect_compact 0 "image create --from-server web1 (attached)" evsctl --json image create --from-server web1 --name snap
SNAP=$(field id) SNAPFILE=$(field path)
check "same CMK and cipher as the system disk, source server:web1" \
        '[ "$(field key_id)" = "$IMG_KEY" ] && [ "$(field cipher)" = "$IMG_CIPHER" ] && [ "$(field source)" = server:web1 ]'
expect_compact 0 "attach the new image" evsctl volume attach "$SNAPFILE"
check "it holds the pattern and what the server wrote since" \
        '[ "$(headsum /dev/mapper/evs-$SNAP 5242999)" = "$SRC" ] && [ "$(at /dev/mapper/evs-$SNAP 20 65536)" = "$MARK" ]'
expect_compact 0 "detach it" evsctl volume detach "$SNAP"

echo "# 3. an AS configuration from web1, and a server launched from it"
expect_compact 0 "as-config create asc --from-server web1" evsctl --json as-config create asc --from-server web1
check "records the system disk's CMK and cipher" \
        '[ "$(fld "$(sysdisk)" key_id)" = "$IMG_KEY" ] && [ "$(fld "$(sysdisk)" cipher)" = "$IMG_CIPHER" ]'
expect_compact 2 "a launch with two data disks for three is refused" evsctl server create web2 --as-config asc \
        --system-disk /dev/vde --data-disk /dev/vdf --data-disk /dev/vdg
check "nothing formatted" '! cryptsetup isLuks /dev/vde && ! cryptsetup isLuks /dev/vdf'
expect_compact 0 "server create web2 --as-config asc" evsctl --json server create web2 --as-config asc \
        --system-disk /dev/vde --data-disk /dev/vdf --data-disk /dev/vdg --data-disk /dev/vdh
check "web2 is attached, launched from asc" '[ "$(field state)" = attached ] && [ "$(field as_config)" = asc ]'
S2=$(sysdisk) E1=$(datadisk 1) E2=$(datadisk 2) E3=$(datadisk 3)
check "system disk: same CMK and cipher as web1's" '[ "$(fld "$S2" key_id)" = "$IMG_KEY" ] && [ "$(fld "$S2" cipher)" = "$IMG_CIPHER" ]'
check "data disks: the same CMKs as web1's, in order, and the third plain" \
        '[ "$(fld "$E1" key_id)" = "$(fld "$D1" key_id)" ] && [ "$(fld "$E2" key_id)" = "$(fld "$D2" key_id)" ] && [ "$(fld "$E3" plain)" = true ] && [ "$(fld "$E3" volume_id)" = null ]'
check "same cipher on the encrypted data disks" '[ "$(fld "$E1" cipher)" = "$(fld "$D1" cipher)" ] && [ "$(fld "$E2" cipher)" = "$(fld "$D2" cipher)" ]'
check "web2's system disk reads the image's pattern" '[ "$(headsum /dev/mapper/evs-web2-sys 5242999)" = "$SRC" ]'
check "web2's data mappings exist, its plain disk has no header" '[ -b /dev/mapper/evs-web2-data1 ] && [ -b /dev/mapper/evs-web2-data2 ] && ! cryptsetup isLuks /dev/vdh'

echo "# 4. the image's CMK disabled: no new server, the running ones keep reading"
expect_compact 0 "disable img1" evsctl key disable img1
expect_compact 3 "server create from base refused" evsctl server create web3 --image base --system-disk /dev/vdi
check "reason: the image's key is disabled" 'echo "$err" | grep -q "of image base is disabled"'
expect_compact 3 "server create from asc refused" evsctl server create web3 --as-config asc --system-disk /dev/vdi \
        --data-disk /dev/vdj --data-disk /dev/vdb --data-disk /dev/vdc
expect_compact 3 "server create from snap (same CMK) refused" evsctl server create web3 --image snap --system-disk /dev/vdi
check "/dev/vdi was not formatted" '! cryptsetup isLuks /dev/vdi'
check "web1's mapping still reads the pattern" '[ "$(headsum /dev/mapper/evs-web1-sys 5242999)" = "$SRC" ]'
check "web2's mapping still reads the pattern" '[ "$(headsum /dev/mapper/evs-web2-sys 5242999)" = "$SRC" ]'
expect_compact 0 "server show web1" evsctl --json server show web1
check "still attached, its key shown disabled" '[ "$(field state)" = attached ] && [ "$(fld "$(sysdisk)" key_state)" = disabled ]'
expect_compact 0 "enable img1" evsctl key enable img1
expect_compact 0 "server create web3 from snap" evsctl --json server create web3 --image snap --system-disk /dev/vdi
check "web3 reads the pattern and web1's later write" \
        '[ "$(headsum /dev/mapper/evs-web3-sys 5242999)" = "$SRC" ] && [ "$(at /dev/mapper/evs-web3-sys 20 65536)" = "$MARK" ]'

echo "# 5a. delete under the detach guard: one volume's CMK disabled keeps the whole server; --force goes ahead"
expect_compact 0 "disable data2 (web1-data2, web2-data2)" evsctl key disable data2
expect_compact 3 "server delete web1 refused" evsctl server delete web1
check "reason: web1-data2 could not be attached again, its key disabled" \
        'echo "$err" | grep -q "Refusing to delete server web1 (nothing detached): Refusing to detach volume web1-data2: it could not be attached again: key .*(data2) is disabled"'
check "nothing detached: web1-sys and web1-data1 (checked before web1-data2) and web1-data2 still open" \
        '[ -b /dev/mapper/evs-web1-sys ] && [ -b /dev/mapper/evs-web1-data1 ] && [ -b /dev/mapper/evs-web1-data2 ] && [ "$(headsum /dev/mapper/evs-web1-sys 5242999)" = "$SRC" ]'
expect_compact 0 "server show web1: kept, attached" evsctl --json server show web1
check "state attached" '[ "$(field state)" = attached ]'
expect_compact 2 "server delete web1 --bogus: usage error" evsctl server delete web1 --bogus
expect_compact 0 "server delete web2 --force" evsctl server delete web2 --force
check "web2's mappings are closed" '[ ! -e /dev/mapper/evs-web2-sys ] && [ ! -e /dev/mapper/evs-web2-data1 ] && [ ! -e /dev/mapper/evs-web2-data2 ]'
check "logged as forced detaches" 'grep -q "Volume web2-data2 detached with --force, without the detach guard" "$T/daemon.log"'
expect_compact 4 "server show web2: gone" evsctl server show web2
check "web2's disks keep their headers" 'cryptsetup isLuks /dev/vde && cryptsetup isLuks /dev/vdg'
expect_compact 0 "enable data2" evsctl key enable data2

echo "# 5. delete: volumes detached, disks and data kept"
expect_compact 0 "server delete web1" evsctl server delete web1
check "web1's mappings are closed" '[ ! -e /dev/mapper/evs-web1-sys ] && [ ! -e /dev/mapper/evs-web1-data1 ] && [ ! -e /dev/mapper/evs-web1-data2 ]'
check "its disks keep their headers, the plain one its data" 'cryptsetup isLuks /dev/vda && cryptsetup isLuks /dev/vdc && [ "$(sum /dev/vdd)" = "$VDD" ]'
expect_compact 4 "server show web1: gone" evsctl server show web1
expect_compact 0 "its system volume attaches again on its own" evsctl volume attach web1-sys
check "with its data" '[ "$(headsum /dev/mapper/evs-web1-sys 5242999)" = "$SRC" ] && [ "$(at /dev/mapper/evs-web1-sys 20 65536)" = "$MARK" ]'
expect_compact 0 "detach it" evsctl volume detach web1-sys
expect_compact 0 "server delete web3" evsctl server delete web3
check "no evs mapping left" '[ -z "$(dmsetup ls 2>/dev/null | grep "^evs-")" ]'
echo "# server suite: $(($(date +%s) - t0)) s"

kill "$DPID"; wait "$DPID" 2>/dev/null
if [ "$failed" != 0 ]; then echo "--- daemon log"; cat "$T/daemon.log"; fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
