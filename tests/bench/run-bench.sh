#!/bin/bash
# vhost-recon's benchmark: prints the results table of the README. Not part of the test run.
#   sudo tests/bench/run-bench.sh [BUILD_DIR]      (about 3 minutes)
# Replay latency against DPDK virtio-user's own reconnect (the same C back-end peer measures
# both, in the same run), storms and flapping of 64/256/1024 ports with and without the
# replay handoff, memory per idle port, idle CPU, and DPDK testpmd throughput through
# vhost-recond versus connected directly. Needs root (hugepages) and dpdk-testpmd for the
# DPDK rows; they are left out, saying why, otherwise.
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
trap 'pkill -9 -f "file-prefix=vr-bench" 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem/{print $2}') GiB, kernel $(uname -r)"
run() { echo "+ $*" >&2; "$@" | tee -a "$out"; }

run "$bench" replay 1 500
run "$bench" replay 4 500
run "$bench" floor 500

have_dpdk=0
if command -v dpdk-testpmd > /dev/null && source tests/real/dpdk-lib.sh && dpdk_setup_hugepages > /dev/null; then
    have_dpdk=1
else
    echo "DPDK rows left out: needs root, hugepages and dpdk-testpmd" | tee -a "$out"
fi

# DPDK virtio-user in server mode: it listens, and redoes its whole setup whenever a
# back-end connects. --stats-period 1: without link polling its reconnect does not work.
dpdk_reconnect() {
    local qp=$1 sock=$WORK/vu$1.sock
    local mq=""; [ "$qp" -gt 1 ] && mq=",cq=1"
    dpdk-testpmd -l 0-1 --no-pci --file-prefix=vr-bench-vu --in-memory --single-file-segments -m 256 \
        --vdev "net_virtio_user0,path=$sock,server=1,queues=$qp$mq" \
        -- -a --nb-cores=1 --rxq="$qp" --txq="$qp" --total-num-mbufs=8192 --forward-mode=io --stats-period 1 \
        < /dev/null > "$WORK/vu$qp.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    # the first connection is part of testpmd's start-up, not a reconnect
    if "$bench" dpdk-reconnect "$sock" 1 > /dev/null; then
        sleep 2
        "$bench" dpdk-reconnect "$sock" 200 | sed "s/bench=dpdk-reconnect/bench=dpdk-reconnect queue_pairs=$qp/" |
            tee -a "$out" || echo "DPDK reconnect with $qp queue pairs failed; see $WORK/vu$qp.log"
    else
        echo "DPDK virtio-user with $qp queue pairs did not come up:"; tail -5 "$WORK/vu$qp.log"
    fi
    kill -9 $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
}
if [ $have_dpdk = 1 ]; then
    dpdk_reconnect 1
    dpdk_reconnect 4
fi

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

# Data path: testpmd flowgen (virtio-user) to a vhost PMD doing mac forwarding, through
# vhost-recond and connected directly; the front-end's receive rate over 5 s.
throughput() {
    local how=$1 fe_sock be_opt
    if [ "$how" = daemon ]; then
        DAEMON=$VHOST_RECOND dpdk_write_config
        DAEMON=$VHOST_RECOND dpdk_start_daemon > /dev/null
        fe_sock=$WORK/port0.sock be_opt="iface=$WORK/port0.vswitch.sock,client=1"
    else
        fe_sock=$WORK/direct.sock be_opt="iface=$WORK/direct.sock"
    fi
    dpdk-testpmd -l 0-1 --main-lcore 1 --no-pci --file-prefix=vr-bench-be --huge-dir=/dev/hugepages --huge-unlink -m 256 \
        --vdev "net_vhost0,$be_opt" -- -a --nb-cores=1 --total-num-mbufs=8192 --forward-mode=mac --stats-period 1 \
        < /dev/null > "$WORK/be.log" 2>&1 &
    local be=$!
    sleep 1
    dpdk-testpmd -l 0-1 --no-pci --file-prefix=vr-bench-fe --in-memory --single-file-segments -m 256 \
        --vdev "net_virtio_user0,path=$fe_sock" -- -a --nb-cores=1 --total-num-mbufs=8192 --forward-mode=flowgen \
        --stats-period 1 < /dev/null > "$WORK/fe.log" 2>&1 &
    local fe=$!
    sleep 8
    local pps
    pps=$(grep -o 'Rx-pps: *[0-9]*' "$WORK/fe.log" | tail -5 | grep -o '[0-9]*$' | awk '{s+=$1} END {printf "%.0f", NR ? s/NR : 0}')
    echo "result bench=throughput path=$how rx_pps=$pps" | tee -a "$out"
    kill -9 $fe $be ${DAEMON_PID:-} 2>/dev/null || true
    wait $fe $be ${DAEMON_PID:-} 2>/dev/null || true
    DAEMON_PID=
    sleep 1
}
if [ $have_dpdk = 1 ]; then
    throughput direct
    throughput daemon
fi

python3 tests/bench/table.py "$out"
