#!/bin/bash
# QEMU 7.2 (TCG) with a real Linux guest (Debian kernel, busybox initramfs: make-guest.sh) as
# the front-end of vhost-recond:
#  (a) virtio-net with a DPDK testpmd back-end (icmpecho), killed with SIGKILL and started
#      again twice while the guest pings: the pings resume, and the guest's carrier never
#      drops;
#  (b) vhost-user-blk with qemu-storage-daemon as the back-end (vhost-recond in client mode),
#      killed and started again while the guest writes 48 MiB: the guest reads all of it
#      back intact.
set -u
DAEMON=${1:?usage: $0 PATH-TO-vhost-recond}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../real/dpdk-lib.sh"
. "$HERE/qemu-lib.sh"

command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"; exit 77; }
qemu_guest || { echo "SKIP: $QEMU_GUEST_ERROR"; exit 77; }

WORK=$(mktemp -d /tmp/vr-qemu-XXXXXX)
QEMU_PID= QSD_PID=
cleanup() {
    for pid in $QEMU_PID $QSD_PID; do kill -9 "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    dpdk_cleanup
    [ -n "${KEEP_TEST_LOGS:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$WORK"/*.log; do echo "--- $f"; grep -vE '^\[ ' "$f" | tail -15; done
    exit 1
}
start_qemu() {   # mode chardev-path device-args...
    local mode=$1 sock=$2; shift 2
    qemu_start "$mode" --mode "$mode" --no-qmp --chardev "$sock" -- "$@"
}
stop_all() {
    for pid in $QEMU_PID $QSD_PID ${DAEMON_PID:-}; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    QEMU_PID= QSD_PID=
    dpdk_cleanup; DAEMON_PID= BACKEND_PID=
}
passed=0
skipped=""   # scenarios that could not run: the test is then skipped, not passed

# (a) virtio-net, DPDK back-end
if ! command -v dpdk-testpmd >/dev/null; then
    echo "skip (a): dpdk-testpmd not installed (apt-get install dpdk-dev librte-net-vhost23)"; skipped="$skipped a"
elif ! reason=$(dpdk_setup_hugepages); then
    echo "skip (a): $reason"; skipped="$skipped a"
else
    dpdk_write_config
    dpdk_start_daemon || fail "daemon"
    icmpecho() {
        dpdk-testpmd -l 0-1 --main-lcore 1 --no-pci --file-prefix=vr-be --huge-dir=/dev/hugepages --huge-unlink \
            -m 256 --vdev "net_vhost0,iface=$WORK/port0.vswitch.sock,queues=1,client=1" \
            -- -a --nb-cores=1 --total-num-mbufs=8192 --forward-mode=icmpecho --stats-period 1 \
            < /dev/null > "$WORK/backend.$1.log" 2>&1 &
        BACKEND_PID=$!
    }
    icmpecho 0
    qemu_wait_line "$WORK/daemon.log" "port0: back-end ready" 20 || fail "(a) the switch did not connect"
    # vectors=0: QEMU 7.2 under TCG crashes when the guest enables MSI-X on a vhost-user net device
    start_qemu net "$WORK/port0.sock" -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0,vectors=0
    qemu_wait_line "$WORK/guest-net.log" "bytes from 10.0.0.2" 90 || fail "(a) the guest gets no answer through vhost-recond"
    for round in 1 2; do
        kill -9 "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null
        sleep 1.5
        before=$(grep -c "bytes from" "$WORK/guest-net.log")
        icmpecho "$round"
        for i in $(seq 300); do [ "$(grep -c "bytes from" "$WORK/guest-net.log")" -gt $((before + 5)) ] && break; sleep 0.1; done
        after=$(grep -c "bytes from" "$WORK/guest-net.log")
        [ "$after" -gt $((before + 5)) ] || fail "(a) round $round: the guest's pings did not resume ($before -> $after)"
        echo "(a) round $round: pings resumed ($before -> $after answers)"
    done
    carrier=$(grep -c "^CARRIER" "$WORK/guest-net.log")
    [ "$carrier" = 1 ] && grep -q "^CARRIER 1" "$WORK/guest-net.log" || {
        grep "^CARRIER" "$WORK/guest-net.log"; fail "(a) the guest's link went down"; }
    grep -o "replay done in [0-9]* µs" "$WORK/daemon.log" | sed 's/^/(a) daemon: /'
    echo "ok (a): QEMU guest on virtio-net: 2 switch SIGKILLs, pings resumed each time, carrier never dropped"
    passed=$((passed + 1))
    stop_all
fi

# (b) vhost-user-blk, qemu-storage-daemon behind client mode
if ! command -v qemu-storage-daemon >/dev/null; then
    echo "skip (b): qemu-storage-daemon not installed (apt-get install qemu-system-common)"; skipped="$skipped b"
else
    truncate -s 64M "$WORK/disk.img"
    cat > "$WORK/blk.conf" <<CONF
control = "$WORK/control";
ports = ( { name = "blk0"; frontend = { path = "$WORK/blk0.sock"; };
            backend = { path = "$WORK/qsd.sock"; mode = "client"; reconnect_ms = 50; }; } );
CONF
    qsd() {
        qemu-storage-daemon --blockdev "driver=file,node-name=disk0,filename=$WORK/disk.img" \
            --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$WORK/qsd.sock,num-queues=1,writable=on" \
            >> "$WORK/qsd.log" 2>&1 &
        QSD_PID=$!
    }
    qsd
    "$DAEMON" --config "$WORK/blk.conf" > "$WORK/daemon-blk.log" 2>&1 & DAEMON_PID=$!
    qemu_wait_line "$WORK/daemon-blk.log" "blk0: back-end ready" 20 || fail "(b) vhost-recond did not reach qemu-storage-daemon"
    start_qemu blk "$WORK/blk0.sock" -device vhost-user-blk-pci,chardev=c0,num-queues=1
    qemu_wait_line "$WORK/guest-blk.log" "^WROTE 8[[:space:]]*$" 120 || fail "(b) the guest does not write"
    kill -9 "$QSD_PID"; wait "$QSD_PID" 2>/dev/null
    killed_at=$(grep -c "^WROTE" "$WORK/guest-blk.log")
    sleep 1.5
    qsd
    qemu_wait_line "$WORK/guest-blk.log" "GUEST DONE|GUEST FAIL" 180 || fail "(b) the guest's I/O never finished"
    grep -q "^VERIFY OK 48 chunks" "$WORK/guest-blk.log" || fail "(b) the data read back is not what was written"
    grep -q "blk0: replay done" "$WORK/daemon-blk.log" || fail "(b) no replay"
    grep -o "replay done in [0-9]* µs" "$WORK/daemon-blk.log" | sed 's/^/(b) daemon: /'
    echo "ok (b): QEMU guest on vhost-user-blk: qemu-storage-daemon SIGKILLed after $killed_at of 48 MiB," \
         "restarted, all 48 MiB read back intact"
    passed=$((passed + 1))
    stop_all
fi

[ -z "$skipped" ] || { echo "$passed passed, 0 failed; SKIP: scenario(s)$skipped could not run (see above)"; exit 77; }
echo "$passed passed, 0 failed"
