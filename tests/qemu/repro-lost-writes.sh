#!/bin/bash
# The TCG migration bug shown directly (see README "Live migration"): the test guest (vr=mig,
# a user netdev) migrated N times to a destination started with -S, so that neither side
# runs after the switchover; then both sides' guest RAM is saved (QMP pmemsave) and compared
# page by page. Every page that differs is a guest write the migration lost. QEMU_MEM=256M
# (a 64-page multiple: QEMU 7.2's fast path) against the default of qemu-lib.sh. Not part of
# the test run:  flock /tmp/vhost-recon-realpeer.lock tests/qemu/repro-lost-writes.sh [N]
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
N=${1:-5}
. "$HERE/qemu-lib.sh"
qemu_guest || { echo "cannot run: $QEMU_GUEST_ERROR"; exit 1; }
WORK=$(mktemp -d /tmp/vr-lost-XXXXXX)
PIDS=
trap 'for p in $PIDS; do kill -9 "$p" 2>/dev/null; done; rm -rf "$WORK"' EXIT
vm() {   # name extra...
    qemu_start "$@" --mode mig -- -netdev user,id=n0 -device virtio-net-pci,netdev=n0,vectors=0
    PIDS="$PIDS $QEMU_PID"
}
bytes=$(numfmt --from=iec "${QEMU_MEM%B}")
bad_runs=0
for i in $(seq "$N"); do
    vm "s$i"; spid=$QEMU_PID
    qemu_wait_line "$WORK/guest-s$i.log" '^UDP sent' 120 || { echo "the guest did not boot"; exit 2; }
    sleep 2
    vm "d$i" --incoming "unix:$WORK/mig-$i.sock" --paused; dpid=$QEMU_PID
    for _ in $(seq 100); do [ -S "$WORK/mig-$i.sock" ] && break; sleep 0.05; done
    times=$(qemu_migrate "$WORK/qmp-s$i.sock" "unix:$WORK/mig-$i.sock") || { echo "migration $i failed"; exit 2; }
    for s in s d; do
        qemu_qmp "$WORK/qmp-$s$i.sock" pmemsave "{\"val\": 0, \"size\": $bytes, \"filename\": \"$WORK/ram-$s\"}" > /dev/null || exit 2
    done
    pages=$(cmp -l "$WORK/ram-s" "$WORK/ram-d" | awk '{ print int(($1 - 1) / 4096) }' | uniq | wc -l)
    echo "migration $i (RAM $QEMU_MEM, total ${times% *} ms, downtime ${times#* } ms): $pages pages differ between source and destination"
    [ "$pages" = 0 ] || bad_runs=$((bad_runs + 1))
    kill -9 "$spid" "$dpid"; wait "$spid" "$dpid" 2>/dev/null
    rm -f "$WORK"/ram-* "$WORK"/*.log
done
echo "RAM $QEMU_MEM: $bad_runs of $N migrations lost guest writes"
