#!/bin/bash
# Reproducer of the TCG migration hang (see README "Live migration"): one test guest (vr=mig,
# a user netdev, no vhost-user) migrated back and forth N times on this machine; after each
# migration the destination must print a new "UDP sent" line within 20 s, or its state and
# the guest's kernel oops are printed and the run fails. QEMU_MEM=256M brings the bug back
# (QEMU 7.2's dirty-bitmap fast path under TCG); the default (qemu-lib.sh) avoids it.
# A busy loop on the other core raises the rate. Not part of the test run:
#   flock /tmp/vhost-recon-realpeer.lock tests/qemu/repro-hang.sh [N]
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
N=${1:-20}
. "$HERE/qemu-lib.sh"
qemu_guest || { echo "cannot run: $QEMU_GUEST_ERROR"; exit 1; }
WORK=$(mktemp -d /tmp/vr-repro-XXXXXX)
PIDS=
trap 'for p in $PIDS; do kill -9 $p 2>/dev/null; done' EXIT
vm() {   # name extra...
    qemu_start "$@" --mode mig -- -netdev user,id=n0 -device virtio-net-pci,netdev=n0,vectors=0
    PIDS="$PIDS $QEMU_PID"
}
echo "guest RAM $QEMU_MEM"
vm 0; cur=0; cur_pid=$QEMU_PID
qemu_wait_line "$WORK/guest-0.log" '^UDP sent' 120 || { echo "the guest did not boot"; tail "$WORK/guest-0.log"; exit 2; }
for i in $(seq "$N"); do
    vm "$i" --incoming "unix:$WORK/mig-$i.sock"; next_pid=$QEMU_PID
    for _ in $(seq 100); do [ -S "$WORK/mig-$i.sock" ] && break; sleep 0.05; done
    times=$(qemu_migrate "$WORK/qmp-$cur.sock" "unix:$WORK/mig-$i.sock") || { echo "migration $i failed"; exit 2; }
    qemu_qmp "$WORK/qmp-$cur.sock" quit > /dev/null; wait "$cur_pid" 2>/dev/null
    if ! qemu_wait_line "$WORK/guest-$i.log" '^UDP sent' 20; then
        echo "HANG after migration $i of $N (logs in $WORK)"
        qemu_state "$WORK/qmp-$i.sock"
        qemu_guest_oops "$WORK/guest-$i.log"
        exit 1
    fi
    echo "migration $i ok: total ${times% *} ms, downtime ${times#* } ms"
    rm -f "$WORK/guest-$cur.log"
    cur=$i; cur_pid=$next_pid
done
echo "$N of $N migrations: the destination ran on each time"
rm -rf "$WORK"
