#!/bin/bash
# Host-side self test of the VM harness tests/vm/evs-vm: boots the VM a few
# times (~15 s each under TCG) and checks what the harness promises.
#
#   tests/vm/run-selftest.sh [--quick]     (--quick: the first two cases)
#
# Prints "ok - NAME" / "not ok - NAME" per case and "N passed, N failed" at
# the end; exits 1 if any case failed.
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
evs_vm=$here/evs-vm
guest=$here/selftest.sh
quick=0
[[ ${1:-} == --quick ]] && quick=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/evs-vm-selftest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

passed=0 failed=0
ok() {
    echo "ok - $1"
    passed=$((passed + 1))
}
not_ok() {
    echo "not ok - $1: $2"
    failed=$((failed + 1))
}

# run_vm LOG CMD...: run CMD with its output shown and copied to LOG; sets
# status to CMD's exit status.
run_vm() {
    local log=$1
    shift
    echo "# $*"
    set +e
    "$@" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
}

# Make sure the kernel is cached first, so its download is not counted in
# the first case's time.
"$evs_vm" fetch >/dev/null

# 1. The brief: dm-crypt round trip on a --disk; exit 0; arguments arrive
#    intact; the boot chatter and the marker are not shown.
name="dm-crypt round trip, exit 0"
tricky="a b'c\"d \$x *"
start=$SECONDS
run_vm "$tmp/1.log" "$evs_vm" run --disk 64M:vol-self "$guest" --echo "$tricky"
if ((status != 0)); then
    not_ok "$name" "status $status"
elif ! grep -qxF "selftest: arg=[$tricky]" "$tmp/1.log"; then
    not_ok "$name" "argument not passed intact"
elif grep -qE 'EVS-VM-|SeaBIOS|Linux version' "$tmp/1.log"; then
    not_ok "$name" "boot chatter or marker in the output"
else
    ok "$name ($((SECONDS - start))s)"
fi

# 2. A failing script's status is carried out.
name="exit status 3 carried out"
start=$SECONDS
run_vm "$tmp/2.log" "$evs_vm" run --disk 64M:vol-self "$guest" --exit 3
if ((status == 3)); then
    ok "$name ($((SECONDS - start))s)"
else
    not_ok "$name" "status $status, want 3"
fi

if ((quick == 0)); then
    # 3. --disk-file (inspected on the host afterwards), a second --disk
    #    with the default serial, --file.
    name="--disk-file, several disks, --file"
    truncate -s 64M "$tmp/disk.img"
    echo hello >"$tmp/hello"
    start=$SECONDS
    run_vm "$tmp/3.log" "$evs_vm" run --disk-file "$tmp/disk.img:vol-file" --disk 8M \
        --file "$tmp/hello:/etc/evs-test/hello" \
        "$guest" --serial vol-file --more-disks evs-disk1 --expect-file /etc/evs-test/hello
    if ((status != 0)); then
        not_ok "$name" "status $status"
    elif ! cryptsetup isLuks "$tmp/disk.img"; then
        not_ok "$name" "the host does not see LUKS on the --disk-file image"
    else
        ok "$name ($((SECONDS - start))s)"
    fi

    # 4. A guest that never finishes: killed at the timeout, status 125.
    name="timeout gives 125"
    printf '#!/bin/sh\necho sleeping\nsleep 1000\n' >"$tmp/hang.sh"
    start=$SECONDS
    run_vm "$tmp/4.log" "$evs_vm" run --timeout 20 "$tmp/hang.sh"
    if ((status != 125)); then
        not_ok "$name" "status $status, want 125"
    elif ! grep -q 'evs-vm: error: timed out' "$tmp/4.log"; then
        not_ok "$name" "no timeout message"
    else
        ok "$name ($((SECONDS - start))s)"
    fi

    # 5. Usage errors are harness errors (125), without booting.
    name="usage error gives 125"
    run_vm "$tmp/5.log" "$evs_vm" run --disk 64X "$guest"
    if ((status == 125)); then ok "$name"; else not_ok "$name" "status $status"; fi
fi

echo "$passed passed, $failed failed"
((failed == 0))
