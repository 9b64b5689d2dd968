#!/bin/bash
# Runs one libFuzzer target for a bounded time on its seeds and its regressions (new inputs
# go to a scratch directory, not into the repository) and prints one summary line: the
# edges it reached (libFuzzer's cov, of the instrumented edges in lib/ and the harness),
# its features (ft) and its executions. A crash fails, with the input kept in WORK.
set -u
FUZZER=${1:?usage: $0 FUZZER SECONDS SEED-DIR...}; SECONDS_=$2; shift 2
NAME=$(basename "$FUZZER")
WORK=$(mktemp -d /tmp/vr-fuzz-XXXXXX)
mkdir "$WORK/corpus"
export LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")" && pwd)/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# UBSan only prints by default: make its findings crashes that libFuzzer catches
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
cd "$WORK"
"$FUZZER" -max_total_time="$SECONDS_" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$WORK/" "$WORK/corpus" "$@" > fuzz.log 2>&1
rc=$?
# "INFO: Loaded 1 modules   (N inline 8-bit counters)": the instrumented edges
total=$(grep -m1 -oE '[0-9]+ inline 8-bit counters' fuzz.log | cut -d' ' -f1)
last=$(grep -E '^#[0-9]+' fuzz.log | tail -1)
cov=$(grep -oE 'cov: [0-9]+' <<< "$last" | grep -oE '[0-9]+')
ft=$(grep -oE 'ft: [0-9]+' <<< "$last" | grep -oE '[0-9]+')
execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' fuzz.log | grep -oE '[0-9]+$')
[ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' <<< "$last" | tr -d '#')
echo "$NAME: ${cov:-?} edges of ${total:-?} instrumented, ${ft:-?} features, ${execs:-?} executions in ${SECONDS_} s, corpus $(ls "$WORK/corpus" | wc -l) new inputs"
if [ $rc -ne 0 ]; then
    tail -40 fuzz.log
    echo "FAIL: $NAME found a problem; the input is in $WORK (crash-*, leak-*, timeout-*, oom-*)"
    exit 1
fi
# blind targets (lib/ not instrumented) saw 13 to 41 edges; the seeds alone reach 107 or more
if [ -z "$cov" ] || [ "$cov" -lt 80 ]; then
    echo "FAIL: $NAME reached ${cov:-no} edges: is lib/ built with -fsanitize=fuzzer-no-link?"
    exit 1
fi
rm -rf "$WORK"
