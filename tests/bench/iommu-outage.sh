#!/bin/bash
# The guest-visible outage of a switch restart with and without a vIOMMU, like for like:
# two QEMU 7.2 (TCG, q35) guests at once, each with virtio-net iommu_platform=on on its own
# vhost-recond port, one of them behind an emulated intel-iommu (device-iotlb, caching-mode,
# guest intel_iommu=on), both served by ONE DPDK testpmd (two vhost vdevs, iommu-support=1,
# icmpecho, loop topology). Each sample SIGKILLs that testpmd and starts it again: both ports
# lose their switch at the same instant, under the same background, and each guest's time from
# the restart to its first answered ping is taken (guests ping every 50 ms; the logs are
# polled every 5 ms). Also per port: the daemon's replay time, the IOTLB entries replayed,
# the misses the new switch sent before that first answer.
#   sudo tests/bench/iommu-outage.sh PATH-TO-vhost-recond [SAMPLES]   (about 4 min for 40)
# Not part of the test run; wrap it in the machine's lock: flock /tmp/vhost-recon-realpeer.lock ...
set -u
DAEMON=${1:?usage: $0 PATH-TO-vhost-recond [SAMPLES]}
SAMPLES=${2:-40}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../real/dpdk-lib.sh"
reason=$(dpdk_setup_hugepages) || { echo "cannot run: $reason"; exit 1; }
GUEST=$(bash "$HERE/../qemu/make-guest.sh" 2> /dev/null) || { echo "cannot build the guest"; exit 1; }

WORK=$(mktemp -d /tmp/vr-iommu-bench-XXXXXX)
QEMU_PIDS=""
cleanup() {
    for pid in $QEMU_PIDS; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    dpdk_cleanup
    [ -n "${KEEP_TEST_LOGS:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
answers() { local n; n=$(grep -c "bytes from" "$WORK/guest-$1.log" 2>/dev/null); echo "${n:-0}"; }
now_us() { date +%s%6N; }

cat > "$WORK/vhost-recon.conf" <<CONF
control = "$WORK/control";
ports = ( { name = "plain";  frontend = { path = "$WORK/plain.sock"; };  backend = { path = "$WORK/plain.vswitch.sock"; }; },
          { name = "viommu"; frontend = { path = "$WORK/viommu.sock"; }; backend = { path = "$WORK/viommu.vswitch.sock"; }; } );
CONF
"$DAEMON" -v --config "$WORK/vhost-recon.conf" > "$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
switch() {
    dpdk-testpmd -l 0-1 --main-lcore 1 --no-pci --file-prefix=vr-iommu-bench --huge-dir=/dev/hugepages --huge-unlink -m 512 \
        --vdev "net_vhost0,iface=$WORK/plain.vswitch.sock,queues=1,client=1,iommu-support=1" \
        --vdev "net_vhost1,iface=$WORK/viommu.vswitch.sock,queues=1,client=1,iommu-support=1" \
        -- -a --nb-cores=1 --port-topology=loop --total-num-mbufs=8192 --forward-mode=icmpecho --stats-period 1 \
        < /dev/null > "$WORK/switch.log" 2>&1 &
    BACKEND_PID=$!
}
switch
guest() {   # name kernel-args machine device-suffix [more qemu args]
    local name=$1 append=$2 machine=$3 dev=$4; shift 4
    qemu-system-x86_64 -machine "$machine" -cpu max -smp 1 -m 256 \
        -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
        -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" -append "console=ttyS0 quiet vr=net vr_ping=0.05 $append" \
        -display none -monitor none -serial "file:$WORK/guest-$name.log" "$@" \
        -chardev socket,id=c0,path="$WORK/$name.sock" -netdev vhost-user,id=n0,chardev=c0 \
        -device "virtio-net-pci,netdev=n0,vectors=0,disable-legacy=on,iommu_platform=on$dev" \
        > "$WORK/qemu-$name.log" 2>&1 &
    QEMU_PIDS="$QEMU_PIDS $!"
}
guest plain "" q35,accel=tcg ""
# no_timer_check: see tests/qemu/test-iommu.sh
guest viommu "intel_iommu=on no_timer_check" q35,accel=tcg,kernel-irqchip=split ",ats=on" \
    -device intel-iommu,intremap=on,device-iotlb=on,caching-mode=on
for _ in $(seq 1800); do
    [ "$(answers plain)" -gt 0 ] && [ "$(answers viommu)" -gt 0 ] && break
    sleep 0.1
done
[ "$(answers plain)" -gt 0 ] && [ "$(answers viommu)" -gt 0 ] || { echo "the guests get no answers"; tail "$WORK"/*.log; exit 1; }
grep -q "viommu: front-end IOTLB_MSG" "$WORK/daemon.log" || { echo "no IOTLB traffic on the vIOMMU port"; exit 1; }
grep -q "plain: front-end IOTLB_MSG" "$WORK/daemon.log" && { echo "IOTLB traffic on the port without a vIOMMU"; exit 1; }

echo "conditions: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//');" \
     "QEMU $(qemu-system-x86_64 --version | head -1 | grep -o '[0-9][0-9.]*' | head -1) TCG, 2 guests at once (1 vCPU, 256 MiB each)," \
     "one testpmd for both (its forwarding core polls core 0), guests ping every 50 ms, 2 s between restarts"
for s in $(seq "$SAMPLES"); do
    sleep 1
    kill -9 "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null
    sleep 1
    bp=$(answers plain); bv=$(answers viommu)
    mv=$(grep -c "viommu: back-end IOTLB miss" "$WORK/daemon.log")
    t0=$(now_us)
    switch
    tp= tv=
    for _ in $(seq 4000); do
        [ -z "$tp" ] && [ "$(answers plain)" -gt "$bp" ] && tp=$(now_us)
        [ -z "$tv" ] && [ "$(answers viommu)" -gt "$bv" ] && { tv=$(now_us); misses=$(( $(grep -c "viommu: back-end IOTLB miss" "$WORK/daemon.log") - mv )); }
        [ -n "$tp" ] && [ -n "$tv" ] && break
        sleep 0.005
    done
    [ -n "$tp" ] && [ -n "$tv" ] || { echo "sample $s: traffic did not resume (plain ${tp:-no}, viommu ${tv:-no})"; exit 1; }
    rp=$(grep -o "plain: replay done in [0-9]*" "$WORK/daemon.log" | tail -1 | grep -o "[0-9]*$")
    rv=$(grep -o "viommu: replay done in [0-9]*" "$WORK/daemon.log" | tail -1 | grep -o "[0-9]*$")
    ev=$(grep -o "viommu: vIOMMU: [0-9]*" "$WORK/daemon.log" | tail -1 | grep -o "[0-9]*$")
    echo "$(( (tp - t0) / 1000 )) $(( (tv - t0) / 1000 )) $rp $rv $ev $misses" >> "$WORK/samples"
done
grep -iE "vhost|iotlb|back-end|backend" "$WORK"/qemu-*.log && { echo "QEMU logged about its back-end"; exit 1; }

python3 - "$WORK/samples" <<'PY'
import statistics, sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1])]
def line(name, xs, unit):
    xs = sorted(xs); p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
    print(f"  {name:<50} min {xs[0]:>6} median {int(statistics.median(xs)):>6} mean {int(statistics.mean(xs)):>6} p90 {p90:>6} max {xs[-1]:>6} {unit}")
print(f"{len(rows)} switch restarts (SIGKILL, 1 s down, started again), both guests each time:")
line("without vIOMMU: restart -> first answer", [r[0] for r in rows], "ms")
line("with vIOMMU:    restart -> first answer", [r[1] for r in rows], "ms")
line("without vIOMMU: replay (connect -> acked)", [r[2] for r in rows], "µs")
line("with vIOMMU:    replay (connect -> acked)", [r[3] for r in rows], "µs")
line("with vIOMMU:    IOTLB entries replayed", [r[4] for r in rows], "")
line("with vIOMMU:    misses relayed before the answer", [r[5] for r in rows], "")
d = [r[1] - r[0] for r in rows]
line("difference (with - without), per restart", d, "ms")
PY
