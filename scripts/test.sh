#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The whole test suite from a clean clone: packages, build (warnings are errors), every meson suite
# (unit, integration, vm, fuzz), then the unit suite again under ASan/UBSan and under TSan, the daemon under both
# (on the host and in the VM storm and faults), unit and integration binaries under valgrind, the fuzz targets
# under libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

BUILD=${EVS_BUILD:-build-ci}
SAN=${EVS_BUILD_SAN:-build-san}
[ -d "$BUILD" ] || meson setup "$BUILD" -Dwerror=true
ninja -C "$BUILD"
meson test -C "$BUILD" --print-errorlogs --num-processes 2

[ -d "$SAN" ] || meson setup "$SAN" -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true
ninja -C "$SAN"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson test -C "$SAN" --suite unit --print-errorlogs --num-processes 2
# The daemon itself under the sanitizers, driven end to end by evsctl; the attach engine's KMS calls through the
# daemon (kms-engine), persistent exec helpers (kms-exec-serve) and record writes that give up the engine lock
# (record-writes), the test helpers built with the sanitizers too.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson test -C "$SAN" daemon kms-engine kms-exec-serve record-writes --print-errorlogs
# The same daemon on a real device-mapper: the VM attach storm and faults (evs-vm hands ASAN_OPTIONS and
# UBSAN_OPTIONS to the guest, where a report, a leak included, fails the run; 6 GiB for 50 sanitized evsctl
# processes at once; not vm-attach, whose stock cryptsetup cannot load a sanitized token plugin).
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 EVS_VM_MEM=6144 \
        meson test -C "$SAN" vm-storm vm-faults --print-errorlogs --num-processes 2 --timeout-multiplier 4

# ThreadSanitizer (its own build: it cannot be combined with ASan): the unit suite and the daemon's threads
# (engine workers, KMS gates, probe threads, the persistent helpers' readers) driven end to end, hung and
# faulted KMSs included. Every report fails the run: each process writes its reports to $TSAN_LOGS, shown here.
TSAN=${EVS_BUILD_TSAN:-build-tsan}
[ -d "$TSAN" ] || meson setup "$TSAN" -Db_sanitize=thread -Db_lundef=false -Dwerror=true
ninja -C "$TSAN"
TSAN_LOGS=$(mktemp -d)
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 log_path=$TSAN_LOGS/tsan"
tsan_failed=0
meson test -C "$TSAN" --suite unit --print-errorlogs --num-processes 2 --timeout-multiplier 4 || tsan_failed=1
meson test -C "$TSAN" daemon kms-engine kms-exec-serve record-writes bus-flood faults \
        --print-errorlogs --num-processes 2 --timeout-multiplier 4 || tsan_failed=1
# And the VM tests whose daemon runs the most threads at once, on a real device-mapper: the attach storm (50
# at once, 8 of one volume, SIGTERM mid-storm) and the faults (disks and KMSs that hang). evs-vm hands
# TSAN_OPTIONS to the guest, where a report fails the run. 6 GiB: 50 TSan-built evsctl processes at once.
# (Not vm-attach: it loads the token plugin into the stock cryptsetup, which cannot load a TSan-built one.)
EVS_VM_MEM=6144 meson test -C "$TSAN" vm-storm vm-faults \
        --print-errorlogs --num-processes 2 --timeout-multiplier 4 || tsan_failed=1
unset TSAN_OPTIONS
if compgen -G "$TSAN_LOGS/tsan.*" >/dev/null; then
        cat "$TSAN_LOGS"/tsan.* >&2
        echo "ThreadSanitizer reported $(cat "$TSAN_LOGS"/tsan.* | grep -c '^WARNING: ThreadSanitizer') problem(s) (above)" >&2
        exit 1
fi
[ "$tsan_failed" = 0 ] || exit 1
echo "ThreadSanitizer: no reports"
rm -rf "$TSAN_LOGS"

# Under valgrind (memcheck, every error and definite or indirect leak fatal; `--setup valgrind`, tests/meson.build):
# the unit suite, and the integration tests that run our binaries: cmocka binaries, and the daemon driven by
# evsctl in test-daemon.sh and test-errors.sh. The other integration tests are scripts around tools and would
# only run slower (valgrind-wrapper.sh runs a script as it is).
meson test -C "$BUILD" --setup valgrind --suite unit --print-errorlogs --num-processes 2
meson test -C "$BUILD" --setup valgrind daemon errors rewrap kms-exec kms-exec-serve kms-pkcs11 kms-kmip backends \
        --print-errorlogs --num-processes 2

# The fuzz targets as libFuzzer binaries (clang), each run for a few seconds from its committed seed corpus
# (the gcc build above ran the same targets over the corpus with deterministic mutations).
FUZZ=${EVS_BUILD_FUZZ:-build-fuzz}
[ -d "$FUZZ" ] || CC=clang meson setup "$FUZZ" # warnings are checked by the gcc build above
mapfile -t fuzz_targets < <(meson introspect "$FUZZ" --targets | python3 -c '
import json, os, sys
for t in json.load(sys.stdin):
    if t["defined_in"].endswith("tests/fuzz/meson.build") and t["type"] == "executable":
        print(os.path.relpath(t["filename"][0], sys.argv[1]))' "$FUZZ")
ninja -C "$FUZZ" "${fuzz_targets[@]}"
meson test -C "$FUZZ" --suite fuzz --no-rebuild --print-errorlogs --num-processes 2
