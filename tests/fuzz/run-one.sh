#!/bin/bash
# Runs one libFuzzer target for a bounded time on its seed corpus (new inputs go to a
# scratch directory, not into the repository). A crash fails, with the input kept in WORK.
set -u
FUZZER=${1:?usage: $0 FUZZER SEED-DIR SECONDS}; SEEDS=$2; SECONDS_=${3:-20}
WORK=$(mktemp -d /tmp/vr-fuzz-XXXXXX)
export LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")" && pwd)/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
cd "$WORK"
"$FUZZER" -max_total_time="$SECONDS_" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "$WORK" "$SEEDS" > fuzz.log 2>&1
rc=$?
grep -E "stat::number_of_executed_units|stat::peak_rss_mb" fuzz.log | sed 's/^/  /'
echo "  corpus: $(ls "$WORK" | grep -vc fuzz.log) new inputs"
if [ $rc -ne 0 ]; then
    tail -40 fuzz.log
    echo "FAIL: $(basename "$FUZZER") found a problem; the input is in $WORK"
    exit 1
fi
rm -rf "$WORK"
echo "ok: $(basename "$FUZZER") ran ${SECONDS_} s without a finding"
