#!/bin/bash
# Live migration time and downtime of the same VM through vhost-recond and connected to DPDK
# testpmd directly, in one run, interleaved: two QEMU 7.2 guests (TCG, 256 MiB, the test
# guest of tests/qemu/ sending UDP that testpmd returns) run side by side the whole time,
# one behind vhost-recond ports port0/port1, one on testpmd's own sockets direct0/direct1;
# each migrates back and forth between its two ports on this machine, R, D, R, D, ...
# QEMU's query-migrate gives total-time and downtime. Not part of the test run.
#   sudo flock /tmp/vhost-recon-realpeer.lock tests/bench/bench-migration.sh [BUILD_DIR [N]]
# (N migrations each, default 40: about 5 minutes.)
set -u
cd "$(dirname "$0")/../.."
build=${1:-build-bench}
N=${2:-40}
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dbuildtype=release > /dev/null
fi
meson compile -C "$build" > /dev/null
DAEMON=$PWD/$build/daemon/vhost-recond
HERE=$PWD/tests/qemu
. tests/real/dpdk-lib.sh
. "$HERE/qemu-lib.sh"
QMP=qemu_qmp
# The guest RAM size in qemu-lib.sh keeps QEMU 7.2's TCG migration from losing guest writes
# (the destination guests that used to go silent had panicked on a stale page).
reason=$(dpdk_setup_hugepages) || { echo "cannot run: $reason"; exit 1; }
qemu_guest ${VR_GUEST_CACHE:-} || { echo "cannot run: $QEMU_GUEST_ERROR"; exit 1; }

WORK=$(mktemp -d /tmp/vr-bench-mig-XXXXXX)
PIDS=
cleanup() {
    for pid in $PIDS; do kill -9 "$pid" 2>/dev/null; done
    dpdk_cleanup
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' TERM INT

cat > "$WORK/vhost-recon.conf" <<CONF
control = "$WORK/control";
ports = ( { name = "port0"; frontend = { path = "$WORK/port0.sock"; }; backend = { path = "$WORK/port0.vswitch.sock"; }; },
          { name = "port1"; frontend = { path = "$WORK/port1.sock"; }; backend = { path = "$WORK/port1.vswitch.sock"; }; } );
CONF
"$DAEMON" --config "$WORK/vhost-recon.conf" > "$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
# One switch for both VMs: vdevs 0 and 1 behind vhost-recond, 2 and 3 QEMU connects to.
dpdk-testpmd -l 0-1 --main-lcore 1 --no-pci --file-prefix=vr-bench-mig-$$ --huge-dir=/dev/hugepages --huge-unlink -m 512 \
    --vdev "net_vhost0,iface=$WORK/port0.vswitch.sock,queues=1,client=1" \
    --vdev "net_vhost1,iface=$WORK/port1.vswitch.sock,queues=1,client=1" \
    --vdev "net_vhost2,iface=$WORK/direct0.sock,queues=1" \
    --vdev "net_vhost3,iface=$WORK/direct1.sock,queues=1" \
    -- -a --nb-cores=1 --total-num-mbufs=16384 --forward-mode=5tswap --port-topology=loop --stats-period 1 \
    < /dev/null > "$WORK/switch.log" 2>&1 &
BACKEND_PID=$!
for _ in $(seq 200); do [ -S "$WORK/direct1.sock" ] && grep -q "port1: back-end ready" "$WORK/daemon.log" && break; sleep 0.1; done

vm() {   # name socket extra...
    local name=$1 sock=$2; shift 2
    qemu_start "$name" --mode mig --vhost-net "$sock" ",csum=off,guest_csum=off" "$@"
    VM_PID=$QEMU_PID
    PIDS="$PIDS $VM_PID"
}

# Each VM: its sockets, where it is now (0 or 1), its QEMU's name and pid.
declare -A sock0=([R]=$WORK/port0.sock [D]=$WORK/direct0.sock) sock1=([R]=$WORK/port1.sock [D]=$WORK/direct1.sock)
declare -A at name pid gen
for v in R D; do
    at[$v]=0; gen[$v]=0; name[$v]=$v-0
    vm "$v-0" "${sock0[$v]}"; pid[$v]=$VM_PID
done
for v in R D; do
    qemu_wait_line "$WORK/guest-$v-0.log" "^UDP sent=[0-9]+ recv=[1-9]" 120 || { echo "VM $v gets no traffic back"; tail "$WORK"/*.log; exit 1; }
done

migrate_once() {   # vm
    local v=$1 next=$((1 - ${at[$1]})) g=$((${gen[$1]} + 1)) sock
    [ $next = 0 ] && sock=${sock0[$v]} || sock=${sock1[$v]}
    local new=$v-$g newpid
    vm "$new" "$sock" --incoming "unix:$WORK/mig-$new.sock"; newpid=$VM_PID
    for _ in $(seq 100); do [ -S "$WORK/mig-$new.sock" ] && [ -S "$WORK/qmp-$new.sock" ] && break; sleep 0.05; done
    $QMP "$WORK/qmp-${name[$v]}.sock" migrate-set-parameters '{"max-bandwidth": 1073741824}' > /dev/null
    $QMP "$WORK/qmp-${name[$v]}.sock" migrate "{\"uri\": \"unix:$WORK/mig-$new.sock\"}" > /dev/null || return 1
    local st
    for _ in $(seq 600); do
        st=$($QMP "$WORK/qmp-${name[$v]}.sock" query-migrate)
        case "$st" in *'"status": "completed"'*) break;; *'"status": "failed"'*) echo "failed: $st" >&2; return 1;; esac
        sleep 0.05
    done
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(sys.argv[2], d["total-time"], d["downtime"])' "$st" "$v" | tee -a "$WORK/samples"
    $QMP "$WORK/qmp-${name[$v]}.sock" quit > /dev/null
    wait "${pid[$v]}" 2>/dev/null
    rm -f "$WORK/guest-${name[$v]}.log"
    at[$v]=$next; gen[$v]=$g; name[$v]=$new; pid[$v]=$newpid
    # the guest goes on at the destination before the next round
    qemu_wait_line "$WORK/guest-$new.log" "^UDP sent" 30 || {
        echo "VM $v: no traffic after migration $g; the destination QEMU says:" >&2
        qemu_state "$WORK/qmp-$new.sock" >&2; qemu_guest_oops "$WORK/guest-$new.log" >&2
        return 1; }
}

for i in $(seq "$N"); do
    for v in R D; do
        migrate_once "$v" || { echo "migration $i of $v failed"; tail -n 5 "$WORK"/qemu-*.log "$WORK/daemon.log"; exit 1; }
    done
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r)"
echo "conditions: QEMU $(qemu-system-x86_64 --version | head -1 | grep -o '[0-9][0-9.]*' | head -1) TCG, $QEMU_MEM memfd guests ($(cd "$QEMU_GUEST" && ls linux-image-*.deb 2>/dev/null | head -1 | cut -d_ -f1-2)) sending UDP that one testpmd returns (5tswap), both VMs running throughout, migrations alternated R/D, max-bandwidth 1 GiB/s, $N each"
python3 - "$WORK/samples" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
label = {"R": "through vhost-recond", "D": "testpmd directly"}
print(f"{'':22} {'n':>3}  {'total ms: min':>13} {'median':>7} {'mean':>7} {'max':>7}   {'downtime ms: min':>16} {'median':>7} {'mean':>7} {'max':>7}")
for v in ("R", "D"):
    t = [int(r[1]) for r in rows if r[0] == v]
    d = [int(r[2]) for r in rows if r[0] == v]
    print(f"{label[v]:22} {len(t):>3}  {min(t):>13} {statistics.median(t):>7.0f} {statistics.mean(t):>7.0f} {max(t):>7}"
          f"   {min(d):>16} {statistics.median(d):>7.0f} {statistics.mean(d):>7.1f} {max(d):>7}")
EOF
