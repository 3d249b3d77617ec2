#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Guest side of run-kmip.sh: volumes whose CMK lives in a KMIP server, two hosts sharing it.
set -u
T=/tmp/evs
mkdir -p "$T"
chmod 0400 /etc/evs-kmip/*.key

modprobe virtio_net && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || { echo "no network"; exit 1; }

for h in a b; do
        cert=client.pem key=client.key
        [ $h = b ] && cert=client2.pem key=client2.key
        cat >"$T/$h.conf" <<CONF
[Daemon]
StateDirectory=/var/lib/evs-$h
BusPath=/run/evs-$h/bus

[KMS]
DefaultBackend=kmip

[Backend kmip]
Type=kmip
Host=10.0.2.100
Port=5696
ServerName=127.0.0.1
CAFile=/etc/evs-kmip/ca.pem
CertificateFile=/etc/evs-kmip/$cert
KeyFile=/etc/evs-kmip/$key
Timeout=3
CONF
done

. /usr/lib/evs-tests/tap.sh
start() { # start HOST
        evs-cryptd --config "$T/$1.conf" >>"$T/$1.log" 2>&1 &
        eval "PID_$1=\$!"
        i=0; until EVS_BUS=/run/evs-$1/bus evsctl status >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
}
host() { EVS_BUS=/run/evs-$1/bus; export EVS_BUS; }
sum() { dd if="$1" bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1; }
server() { nc -w 30 10.0.2.100 "$1" </dev/null >/dev/null 2>&1; }

head -c 4194304 /dev/urandom >"$T/pattern"
PAT=$(sha256sum "$T/pattern" | cut -d' ' -f1)
start a; start b

echo "# host a: a CMK in the KMIP server, a volume on it"
host a
expect 0 "create a key on the kmip backend" evsctl --json key create app-kmip --backend kmip
check "it is enabled and on kmip" 'echo "$out" | grep -q "\"state\":\"enabled\"" && echo "$out" | grep -q "\"backend\":\"kmip\""'
expect 0 "create vol-k1 with kmip:app-kmip" evsctl volume create /dev/vda --id vol-k1 --key kmip:app-kmip
check "the token names the kmip backend" 'cryptsetup token export --token-id 0 /dev/vda | grep -q "\"evs_backend\":\"kmip\""'
expect 0 "attach vol-k1 (unwrap on the KMIP server)" evsctl volume attach vol-k1
check "write the pattern" 'dd if=$T/pattern of=/dev/mapper/evs-vol-k1 bs=1M conv=fsync 2>/dev/null'
expect 0 "detach vol-k1 on host a" evsctl volume detach vol-k1

echo "# host b: its own state directory, the same KMIP server"
host b
expect 0 "host b attaches the volume host a created" evsctl volume attach /dev/vda
check "host b reads host a's data" '[ "$(sum /dev/mapper/evs-vol-k1)" = "$PAT" ]'
expect 0 "host b detaches" evsctl volume detach vol-k1

echo "# the KMIP server stopped, then back"
host a
expect 0 "create vol-k2 with the same key" evsctl volume create /dev/vdb --id vol-k2 --key kmip:app-kmip
server 7
t0=$(date +%s)
expect 6 "attach refused while the KMS is down" evsctl volume attach vol-k1
t1=$(date +%s)
check "refused within the configured timeout (3 s + 2)" '[ $((t1 - t0)) -le 5 ]'
check "reason says the KMS is unavailable" 'echo "$err" | grep -qi "unavailable"'
check "nothing opened" '[ ! -e /dev/mapper/evs-vol-k1 ]'
server 8
expect 0 "attach works once the server is back" evsctl volume attach vol-k1
check "data intact" '[ "$(sum /dev/mapper/evs-vol-k1)" = "$PAT" ]'
expect 0 "attach vol-k2" evsctl volume attach vol-k2

echo "# disable = Revoke on the server"
expect 0 "disable the key" evsctl --json key disable kmip:app-kmip
check "state disabled" 'echo "$out" | grep -q "\"state\":\"disabled\""'
check "the open mapping keeps working" '[ "$(sum /dev/mapper/evs-vol-k1)" = "$PAT" ]'
expect 3 "detach vol-k1 refused: it could not be attached again" evsctl volume detach vol-k1
check "the guard names the disabled key" 'echo "$err" | grep -q "disabled"'
expect 0 "detach vol-k1 --force" evsctl volume detach --force vol-k1
expect 3 "attach refused: key disabled" evsctl volume attach vol-k1
check "reason says disabled" 'echo "$err" | grep -q "disabled"'
host b
expect 3 "host b sees the same refusal" evsctl volume attach vol-k1
host a
expect 1 "KMIP cannot re-enable a revoked key: says so" evsctl key enable kmip:app-kmip
check "reason explains" 'echo "$err" | grep -qi "kmip"'
expect 1 "KMIP has no scheduled deletion: says so" evsctl key schedule-deletion kmip:app-kmip --days 7
expect 0 "vol-k2 stays attached and detaches with --force" evsctl volume detach --force vol-k2

kill $PID_a $PID_b 2>/dev/null; wait 2>/dev/null
if [ "$failed" != 0 ]; then for h in a b; do echo "--- daemon $h log"; cat "$T/$h.log"; done; fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
