#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A PyKMIP server of its own for the kmip backend's integration test.
#
#   kmip-server.sh [--rekey] TEST-BINARY [ARGS...]
#       Makes a temp dir with a CA, a server certificate (127.0.0.1, localhost), client
#       certificates, a PyKMIP config and database; starts pykmip-server on 127.0.0.1 on a free
#       port; runs the test with EVS_TEST_KMIP_DIR, EVS_TEST_KMIP_PORT and EVS_TEST_KMIP_SCRIPT
#       exported; stops the server (SIGINT) and removes the dir. Exits with the test's status, or
#       77 (skip) only when pykmip-server or the kmip Python module is not installed. With --rekey the
#       server is pykmip-rekey-server (next to this script): PyKMIP's server plus the ReKey operation,
#       Link attributes and ReKey in Query Operations; EVS_TEST_KMIP_REKEY=1 is exported then.
#   kmip-server.sh --start DIR      starts the server of DIR again (same port); waits until it listens
#   kmip-server.sh --stop DIR       stops it and the processes it forked (its process group): SIGINT,
#                                   then SIGKILL after 3 s (on SIGINT PyKMIP waits up to 10 s for
#                                   each client session still open)
#   kmip-server.sh --create-key DIR NAME
#                                   creates an AES-256 key named NAME with PyKMIP's own client,
#                                   left Pre-Active, and prints its unique identifier
#   kmip-server.sh --state DIR ID   prints the KMIP State of object ID as PyKMIP's own client reads it
#                                   (ACTIVE, DEACTIVATED, ...): what the server itself holds
#
# Files in DIR: ca.pem, server.{pem,key}, client.{pem,key} (CN=evs-cryptd, clientAuth),
# client2.{pem,key} (another key pair, same CN: a second host), noauth.{pem,key} (no extended
# key usage: TLS accepts it, PyKMIP refuses it),
# other-ca.pem (a CA that signed nothing here), server.conf, server.log, server.pid, port.
set -eu

# The Python first on PATH may lack the kmip module (notes/kms-servers.md).
PYTHON=/usr/bin/python3
PYKMIP_SERVER=${EVS_TEST_PYKMIP_SERVER:-/usr/bin/pykmip-server}
REKEY_SERVER=$(dirname "$(readlink -f "$0")")/pykmip-rekey-server

die() {
        echo "kmip-server.sh: $*" >&2
        exit 1
}

start_server() {
        local dir=$1 port pid i server=$PYKMIP_SERVER
        port=$(cat "$dir/port")
        [ -e "$dir/rekey" ] && server=$REKEY_SERVER
        # The server writes its log with -l; its stdout/stderr only hold start-up failures. It runs
        # in a process group of its own: it forks helpers (multiprocessing) that --stop must end too.
        setsid "$server" -f "$dir/server.conf" -l "$dir/server.log" >>"$dir/server.out" 2>&1 </dev/null &
        pid=$!
        # Not a job of ours: no "Killed" notice when --stop has to use SIGKILL.
        disown "$pid" 2>/dev/null || true
        echo "$pid" >"$dir/server.pid"
        # Listening means ready (about 0.5-0.9 s); give it 20 s on a loaded machine.
        for ((i = 0; i < 200; i++)); do
                if ! kill -0 "$pid" 2>/dev/null; then
                        cat "$dir/server.out" "$dir/server.log" >&2 2>/dev/null || true
                        die "pykmip-server exited during start-up"
                fi
                if "$PYTHON" - "$port" <<'PY' 2>/dev/null; then
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.close()
PY
                        return 0
                fi
                sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        die "pykmip-server did not listen on port $port within 20 s"
}

stop_server() {
        local dir=$1 pid i
        [ -s "$dir/server.pid" ] || return 0
        pid=$(cat "$dir/server.pid")
        : >"$dir/server.pid"
        # The whole group: the server and the helper processes it forked.
        kill -INT -- "-$pid" 2>/dev/null || return 0
        for ((i = 0; i < 30; i++)); do
                # Done when no process of the group is left but zombies (their parents reap them).
                pgrep -g "$pid" -r R,S,D,T,t,W,I,P >/dev/null || break
                sleep 0.1
        done
        if kill -KILL -- "-$pid" 2>/dev/null; then
                # SIGKILL is asynchronous too: the port is free only once they are gone.
                for ((i = 0; i < 50; i++)); do
                        pgrep -g "$pid" -r R,S,D,T,t,W,I,P >/dev/null || break
                        sleep 0.1
                done
        fi
        wait "$pid" 2>/dev/null || true
}

create_key() {
        local dir=$1 name=$2
        "$PYTHON" - "$dir" "$(cat "$dir/port")" "$name" <<'PY'
import sys
from kmip import enums
from kmip.pie.client import ProxyKmipClient
d, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = ProxyKmipClient(hostname="127.0.0.1", port=port, cert=d + "/client.pem", key=d + "/client.key",
                    ca=d + "/ca.pem", config_file=d + "/client.conf", kmip_version=enums.KMIPVersion.KMIP_1_4)
with c:
    uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=name,
                   cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                             enums.CryptographicUsageMask.DECRYPT])
print(uid)
PY
}

key_state() {
        local dir=$1 id=$2
        "$PYTHON" - "$dir" "$(cat "$dir/port")" "$id" <<'PY'
import sys
from kmip import enums
from kmip.pie.client import ProxyKmipClient
d, port, uid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = ProxyKmipClient(hostname="127.0.0.1", port=port, cert=d + "/client.pem", key=d + "/client.key",
                    ca=d + "/ca.pem", config_file=d + "/client.conf", kmip_version=enums.KMIPVersion.KMIP_1_4)
with c:
    _, attrs = c.get_attributes(uid, ["State"])
print(attrs[0].attribute_value.value.name)
PY
}

# Certificate with CN $2 signed by CA $3, extensions from $4; files $1.pem, $1.key.
issue() {
        local base=$1 cn=$2 ca=$3 ext=$4
        openssl req -new -newkey rsa:2048 -nodes -keyout "$base.key" -out "$base.csr" -subj "/CN=$cn" 2>/dev/null
        printf '%s\n' "$ext" >"$base.ext"
        openssl x509 -req -in "$base.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -days 2 \
                -extfile "$base.ext" -out "$base.pem" 2>/dev/null
        rm -f "$base.csr" "$base.ext"
}

setup() {
        local dir=$1 port
        cd "$dir"
        for ca in ca other-ca; do
                openssl req -x509 -newkey rsa:2048 -nodes -keyout $ca.key -out $ca.pem -days 2 \
                        -subj "/CN=evs-test-$ca" -addext "basicConstraints=critical,CA:TRUE" \
                        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        done
        issue server 127.0.0.1 ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature,keyEncipherment"
        issue client evs-cryptd ca "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature,keyEncipherment"
        issue client2 evs-cryptd ca "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature,keyEncipherment"
        issue noauth evs-cryptd ca "keyUsage=critical,digitalSignature,keyEncipherment"
        chmod 0600 ./*.key

        port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        echo "$port" >port
        mkdir policies
        cat >server.conf <<CONF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$dir/server.pem
key_path=$dir/server.key
ca_path=$dir/ca.pem
auth_suite=TLS1.2
policy_path=$dir/policies
enable_tls_client_auth=True
database_path=$dir/pykmip.db
logging_level=INFO
CONF
        cat >client.conf <<CONF
[client]
host=127.0.0.1
port=$port
certfile=$dir/client.pem
keyfile=$dir/client.key
ca_certs=$dir/ca.pem
ssl_version=PROTOCOL_TLSv1_2
do_handshake_on_connect=True
suppress_ragged_eofs=True
CONF
        cd - >/dev/null
}

case "${1:-}" in
--start)
        start_server "$2"
        exit 0
        ;;
--stop)
        stop_server "$2"
        exit 0
        ;;
--create-key)
        create_key "$2" "$3"
        exit 0
        ;;
--state)
        key_state "$2" "$3"
        exit 0
        ;;
"")
        die "usage: kmip-server.sh TEST-BINARY [ARGS...]"
        ;;
esac

rekey=0
if [ "$1" = --rekey ]; then
        rekey=1
        shift
fi
if [ ! -x "$PYKMIP_SERVER" ] || ! "$PYTHON" -c 'import kmip.services.server' 2>/dev/null; then
        echo "SKIP: $PYKMIP_SERVER or the kmip module of $PYTHON is not installed (Debian package python3-pykmip)" >&2
        exit 77
fi
command -v openssl >/dev/null || die "openssl is not installed"

dir=$(mktemp -d /tmp/evs-kmip.XXXXXX)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
        stop_server "$dir"
        if [ "${EVS_TEST_KEEP:-0}" = 1 ]; then
                echo "kmip-server.sh: kept $dir" >&2
        else
                rm -rf "$dir"
        fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

setup "$dir"
if [ "$rekey" = 1 ]; then
        touch "$dir/rekey"
        export EVS_TEST_KMIP_REKEY=1
fi
start_server "$dir"

export EVS_TEST_KMIP_DIR="$dir"
EVS_TEST_KMIP_PORT=$(cat "$dir/port")
export EVS_TEST_KMIP_PORT
EVS_TEST_KMIP_SCRIPT=$(readlink -f "$0")
export EVS_TEST_KMIP_SCRIPT

rc=0
${EVS_VALGRIND_WRAPPER:-} "$@" || rc=$? # under valgrind with `meson test --setup valgrind`
if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
        echo "--- tail of server.log ---" >&2
        tail -n 40 "$dir/server.log" >&2 2>/dev/null || true
fi
exit $rc
