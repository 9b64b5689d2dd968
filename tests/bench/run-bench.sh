#!/bin/bash
# vhost-recon's benchmark: prints the table of vhost-recond's own figures in the README. Not
# part of the test run.
#   tests/bench/run-bench.sh [BUILD_DIR]      (about 3 minutes)
# Replay latency, storms and flapping of 64/256/1024 ports with and without the replay
# handoff, memory per idle port, idle CPU: figures of vhost-recond alone. It compares with
# nothing: comparisons are like for like, interleaved in one run, and made by
# tests/bench/run-compare.sh (DPDK's own reconnect) and tests/bench/bench-storage-restart.py
# (QEMU's). Its earlier DPDK rows (DPDK's reconnect measured in a phase of its own, and
# testpmd's throughput direct / through vhost-recond, one run each) were not like for like
# and are gone.
set -eu
cd "$(dirname "$0")/../.."
build=${1:-build-bench}
if [ ! -f "$build/build.ninja" ]; then
    bash tests/setup.sh
    meson setup "$build" -Dbuildtype=release > /dev/null
fi
meson compile -C "$build" > /dev/null
bench=$build/tests/vhost-recon-bench
export VHOST_RECOND=$PWD/$build/daemon/vhost-recond
WORK=$(mktemp -d /tmp/vr-bench-XXXXXX)
out=$WORK/results
trap 'rm -rf "$WORK"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem/{print $2}') GiB, kernel $(uname -r)"
run() { echo "+ $*" >&2; "$@" | tee -a "$out"; }

run "$bench" replay 1 500
run "$bench" replay 4 500
run "$bench" floor 500

for n in 64 256 1024; do
    for h in 0 2; do
        run "$bench" storm $n 5 $h
    done
done
for n in 64 1024; do
    for h in 0 2; do
        run "$bench" flap $n 10 $h
    done
done
run "$bench" idle 1024 10

python3 tests/bench/table.py "$out"
