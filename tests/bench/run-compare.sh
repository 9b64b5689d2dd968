#!/bin/bash
# The replay against DPDK's own reconnect, like for like. Not part of the test run.
#   flock /tmp/vhost-recon-realpeer.lock tests/bench/run-compare.sh [BUILD_DIR] [SAMPLES] [GAP_MS]
# Two testpmds run for the whole run, both virtio-user with 1 queue pair, forwarding (io):
#   A  virtio-user connected to vhost-recond's front-end socket (vhost-recond replays to
#      each new back-end);
#   B  virtio-user in server mode (DPDK's own reconnect: it redoes its setup with each new
#      back-end).
# The same fake back-end (tests/peers, in vhost-recon-bench) connects to A's back-end socket
# and to B, A B A B, GAP_MS (default 1500) before every connect, SAMPLES (default 40) each,
# and times connect() -> DRIVER_OK received, and each message's arrival (the timeline).
# PERF=1: the same under perf sched record (the scheduler's timeline: /tmp/vr-compare-sched.txt).
# STRACE=1: the same, with vhost-recond under strace -f -tt -T (its own syscalls in the
# timeline; it slows the daemon, so those figures are not the comparison).
# MIRROR=1: vhost-recond runs with its fd store mirror on (as under systemd with
# FileDescriptorStoreMax=): NOTIFY_SOCKET points at the fd store stand-in of
# tests/integration/fdstore-standin.c (vhost-recon-bench standin), which plays systemd's part
# and keeps what FDSTORE=1 sends; DPDK has nothing like it.
set -eu
cd "$(dirname "$0")/../.."
build=${1:-build-bench}
samples=${2:-40}
gap=${3:-1500}
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dbuildtype=release > /dev/null
fi
meson compile -C "$build" > /dev/null
bench=$PWD/$build/tests/vhost-recon-bench
DAEMON=$PWD/$build/daemon/vhost-recond
. tests/real/dpdk-lib.sh
command -v dpdk-testpmd > /dev/null || { echo "SKIP: dpdk-testpmd not installed"; exit 77; }
reason=$(dpdk_setup_hugepages) || { echo "SKIP: $reason"; exit 77; }
WORK=$(mktemp -d /tmp/vr-compare-XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    [ -n "${KEEP_BENCH_LOGS:-}" ] && echo "logs in $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

dpdk_write_config
mirror=off
if [ "${MIRROR:-0}" = 1 ]; then
    [ "${STRACE:-0}" = 1 ] && { echo "MIRROR=1 and STRACE=1 do not go together"; exit 2; }
    mirror="on (NOTIFY_SOCKET: the fd store stand-in)"
    "$bench" standin "$WORK/vhost-recon.conf" "$WORK/daemon.log" "$WORK" > "$WORK/standin.out" 2>&1 &
    standin=$!
    PIDS="$PIDS $standin"
    for _ in $(seq 200); do grep -q "daemon_pid=" "$WORK/standin.out" && break; sleep 0.05; done
    grep -q "daemon_pid=" "$WORK/standin.out" || { echo "the stand-in did not start the daemon"; cat "$WORK/standin.out"; exit 1; }
elif [ "${STRACE:-0}" = 1 ]; then
    strace -f -tt -T -o "$WORK/recond.strace" "$DAEMON" --config "$WORK/vhost-recon.conf" > "$WORK/daemon.log" 2>&1 &
    PIDS="$PIDS $!"
    # killing strace alone would leave the daemon running (and holding the lock's fd)
    for _ in $(seq 100); do child=$(pgrep -P $! || true); [ -n "$child" ] && break; sleep 0.05; done
    PIDS="$child $PIDS"
else
    "$DAEMON" --config "$WORK/vhost-recon.conf" > "$WORK/daemon.log" 2>&1 &
    PIDS="$PIDS $!"
fi
for _ in $(seq 100); do grep -q "vhost-recond running" "$WORK/daemon.log" && break; sleep 0.05; done

testpmd() {   # name vdev
    dpdk-testpmd -l 0-1 --no-pci --file-prefix="vr-compare-$1-$$" --in-memory --single-file-segments -m 256 \
        --vdev "$2" -- -a --nb-cores=1 --total-num-mbufs=8192 --forward-mode=io --stats-period 1 \
        < /dev/null > "$WORK/testpmd-$1.log" 2>&1 &
    PIDS="$PIDS $!"
}
testpmd a "net_virtio_user0,path=$WORK/port0.sock,queues=1"
testpmd b "net_virtio_user0,path=$WORK/vu.sock,server=1,queues=1"
for _ in $(seq 100); do [ -S "$WORK/vu.sock" ] && break; sleep 0.05; done
# the first connection of each is the front-ends' own start-up, not a reconnect
"$bench" compare "$WORK/port0.vswitch.sock" "$WORK/vu.sock" 1 100 > "$WORK/warmup" ||
    { echo "warm-up failed"; tail -5 "$WORK"/*.log; exit 1; }
sleep 2

echo "conditions: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r)," \
     "DPDK $(dpkg-query -W -f='${Version}' dpdk-dev 2>/dev/null || echo ?), $(basename "$build") build," \
     "load $(cut -d' ' -f1-3 /proc/loadavg); both testpmds (virtio-user, 1 queue pair, io forwarding) running throughout;" \
     "A B A B, $samples samples each, ${gap} ms before every connect; the same fake back-end times both;" \
     "vhost-recond's fd store mirror $mirror"
if [ "${PERF:-0}" = 1 ]; then
    # the scheduler's view of the same run: who ran where, who woke whom, and how long it waited
    perf sched record -a -o "$WORK/perf.data" -- "$bench" compare "$WORK/port0.vswitch.sock" "$WORK/vu.sock" "$samples" "$gap"
    perf sched timehist -i "$WORK/perf.data" -w -V > /tmp/vr-compare-sched.txt 2>/dev/null || true
    echo "perf sched timehist: /tmp/vr-compare-sched.txt"
else
    "$bench" compare "$WORK/port0.vswitch.sock" "$WORK/vu.sock" "$samples" "$gap"
fi
echo "after: load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${MIRROR:-0}" = 1 ]; then
    kill -TERM "$standin" 2>/dev/null || true
    wait "$standin" 2>/dev/null || true
    grep "fds_stored=" "$WORK/standin.out" || true
    grep -q "fd store: .* commits" "$WORK/daemon.log" && grep -o "fd store: .*" "$WORK/daemon.log" | tail -1
fi
if [ "${STRACE:-0}" = 1 ]; then
    cp "$WORK/recond.strace" "/tmp/vr-compare-recond.strace"
    echo "vhost-recond's strace: /tmp/vr-compare-recond.strace"
fi
