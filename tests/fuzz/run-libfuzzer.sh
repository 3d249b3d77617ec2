#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs a fuzz target over its committed seed corpus, for the fuzz suite:
#   run-libfuzzer.sh standalone BINARY CORPUS-DIR      every seed file, and the binary's own mutations
#   run-libfuzzer.sh libfuzzer BINARY CORPUS-DIR SECS   libFuzzer for SECS seconds from the seeds; new inputs go
#                                                       to a scratch directory, the committed corpus is only read
set -euo pipefail
mode=$1 bin=$2 corpus=$3
[ -d "$corpus" ] && [ -n "$(ls -A "$corpus")" ] || { echo "no seed corpus in $corpus" >&2; exit 1; }
case $mode in
standalone)
        exec "$bin" "$corpus"/*
        ;;
libfuzzer)
        secs=${4:-5}
        scratch=$(mktemp -d)
        trap 'rm -rf "$scratch"' EXIT
        # -seed fixed so that a failure reproduces; the final stats show the coverage reached.
        "$bin" -max_total_time="$secs" -seed=1 -max_len=8192 -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
                "$scratch" "$corpus"
        ;;
*)
        echo "unknown mode $mode" >&2
        exit 2
        ;;
esac
