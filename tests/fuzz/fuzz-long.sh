#!/bin/bash
# Runs the libFuzzer targets for a long time, by hand (not a test):
#   tests/fuzz/fuzz-long.sh BUILD-DIR OUT-DIR fuzz-message:1200 fuzz-shadow:1500 ...
# Each target runs for its seconds, in chunks of CHUNK seconds (default 300) that share
# one corpus (OUT-DIR/TARGET/corpus, seeded from tests/fuzz/corpus and regressions), so a chunk goes on
# where the last stopped. With FUZZ_JOBS=2 a second lane takes chunks from the other end
# of the list, but only while nobody holds YIELD_LOCK (default the shared machine's
# /tmp/vhost-recon-realpeer.lock, taken by real-peer runs and benchmarks). At the end it
# prints, per target, the edges (cov) and features (ft) of the whole corpus and the
# executions summed over the chunks. A crash stops its target; the input is kept in
# OUT-DIR/TARGET/ (crash-*, leak-*, timeout-*, oom-*).
set -u
BUILD=$(realpath "${1:?usage: $0 BUILD-DIR OUT-DIR TARGET:SECONDS...}"); OUT=$2; shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
CHUNK=${CHUNK:-300}; JOBS=${FUZZ_JOBS:-1}; YIELD_LOCK=${YIELD_LOCK:-/tmp/vhost-recon-realpeer.lock}
export LSAN_OPTIONS="suppressions=$HERE/lsan.supp"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
mkdir -p "$OUT/claims"; OUT=$(realpath "$OUT")

chunks=()
for spec in "$@"; do
    t=${spec%%:*}; s=${spec#*:}
    mkdir -p "$OUT/$t/corpus"
    for ((k = 0; s > 0; k++, s -= CHUNK)); do
        chunks+=("$t:$k:$((s < CHUNK ? s : CHUNK))")
    done
done

run_chunk() {    # TARGET INDEX SECONDS
    local t=$1 k=$2 s=$3
    [ -e "$OUT/$t/stopped" ] && return
    mkdir "$OUT/claims/$t-$k" 2> /dev/null || return
    echo "$(date -u +%T) $t chunk $k: ${s} s"
    local seeds=("$HERE/corpus/$t")
    [ -d "$HERE/regressions/$t" ] && seeds+=("$HERE/regressions/$t")
    nice -n 10 "$BUILD/tests/fuzz/$t" -max_total_time="$s" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$OUT/$t/" "$OUT/$t/corpus" "${seeds[@]}" \
        > "$OUT/$t/chunk-$k.log" 2>&1
    local rc=$?
    echo "$(date -u +%T) $t chunk $k: $(grep -E '^#[0-9]+' "$OUT/$t/chunk-$k.log" | tail -1)"
    if [ $rc -ne 0 ]; then
        touch "$OUT/$t/stopped"
        echo "$t: FOUND A PROBLEM (exit $rc), see $OUT/$t/chunk-$k.log"
        grep -E '^==[0-9]+==ERROR|SUMMARY|runtime error|^artifact_prefix|Test unit written' "$OUT/$t/chunk-$k.log" | head -5
    fi
}

lane_forward() {
    for c in "${chunks[@]}"; do IFS=: read -r t k s <<< "$c"; run_chunk "$t" "$k" "$s"; done
}
lane_backward() {
    for ((i = ${#chunks[@]} - 1; i >= 0; i--)); do
        IFS=: read -r t k s <<< "${chunks[i]}"
        [ -d "$OUT/claims/$t-$k" ] && continue
        while ! flock -n "$YIELD_LOCK" true; do    # someone runs real peers: one lane only
            sleep 10
            [ -d "$OUT/claims/$t-$k" ] && continue 2
        done
        run_chunk "$t" "$k" "$s"
    done
}

lane_forward &
lanes=$!
if [ "$JOBS" -ge 2 ]; then lane_backward & lanes="$lanes $!"; fi
wait $lanes

echo "== summary ($(date -u +%T)); command: $0 $BUILD $OUT $*"
for spec in "$@"; do
    t=${spec%%:*}
    execs=$(cat "$OUT/$t"/chunk-*.log 2> /dev/null | grep -oE 'stat::number_of_executed_units: [0-9]+' |
            awk '{ n += $2 } END { print n + 0 }')
    secs=$(cat "$OUT/$t"/chunk-*.log 2> /dev/null | grep -oE 'Done [0-9]+ runs in [0-9]+ second' |
           awk '{ n += $5 } END { print n + 0 }')
    # the whole corpus once more, without mutation: its edges and features
    final=$("$BUILD/tests/fuzz/$t" -runs=0 "$OUT/$t/corpus" 2>&1 | grep -E '^#[0-9]+.*(INITED|DONE)' | tail -1)
    state=$([ -e "$OUT/$t/stopped" ] && echo "STOPPED ON A FINDING" || echo "no finding")
    echo "$t: $(grep -oE 'cov: [0-9]+' <<< "$final" | cut -d' ' -f2) edges," \
         "$(grep -oE 'ft: [0-9]+' <<< "$final" | cut -d' ' -f2) features, $execs executions in $secs s," \
         "corpus $(ls "$OUT/$t/corpus" | wc -l) files, $state"
done
