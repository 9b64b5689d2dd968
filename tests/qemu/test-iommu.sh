#!/bin/bash
# ACCESS_PLATFORM through vhost-recond with real peers: QEMU 7.2 (TCG, q35) with a Linux guest
# pinging through virtio-net, DPDK testpmd (vhost PMD, iommu-support=1, icmpecho) as the
# switch, SIGKILLed and started again ROUNDS times while the guest runs:
#  (a) iommu_platform=on without a vIOMMU (as a confidential VM has it);
#  (b) iommu_platform=on,ats=on behind an emulated intel-iommu (device-iotlb, caching-mode),
#      the guest booted with intel_iommu=on: ring and buffer addresses are IOVAs, the switch
#      asks for translations (IOTLB misses relayed to QEMU) and the daemon replays the ones
#      it kept.
# Each time the guest's pings resume, the guest's carrier never drops and QEMU logs nothing
# about its back-end. Prints, per round, the time from the switch's restart to the guest's
# first answered ping, the replay time, the IOTLB entries replayed and the misses the new
# switch sent before traffic resumed.
# Usage: test-iommu.sh PATH-TO-vhost-recond [ROUNDS]
set -u
DAEMON=${1:?usage: $0 PATH-TO-vhost-recond [ROUNDS]}
ROUNDS=${2:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../real/dpdk-lib.sh"
. "$HERE/qemu-lib.sh"

command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"; exit 77; }
command -v dpdk-testpmd >/dev/null || { echo "SKIP: dpdk-testpmd not installed (apt-get install dpdk-dev)"; exit 77; }
reason=$(dpdk_setup_hugepages) || { echo "SKIP: $reason"; exit 77; }
qemu_guest || { echo "SKIP: $QEMU_GUEST_ERROR"; exit 77; }

WORK=$(mktemp -d /tmp/vr-iommu-XXXXXX)
QEMU_PID=
cleanup() {
    [ -n "$QEMU_PID" ] && { kill -9 "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null; }
    dpdk_cleanup
    [ -n "${KEEP_TEST_LOGS:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$WORK"/*.log; do echo "--- $f"; grep -vE '^\[ |IOTLB (miss|update)|front-end IOTLB_MSG' "$f" | tail -20; done
    exit 1
}
now_ms() { date +%s%3N; }
answers() { local n; n=$(grep -c "bytes from" "$WORK/guest-$1.log" 2>/dev/null); echo "${n:-0}"; }

switch() {   # log-suffix
    dpdk-testpmd -l 0-1 --main-lcore 1 --no-pci --file-prefix=vr-iommu-be --huge-dir=/dev/hugepages --huge-unlink \
        -m 256 --vdev "net_vhost0,iface=$WORK/port0.vswitch.sock,queues=1,client=1,iommu-support=1" \
        -- -a --nb-cores=1 --total-num-mbufs=8192 --forward-mode=icmpecho --stats-period 1 \
        < /dev/null > "$WORK/backend.$1.log" 2>&1 &
    BACKEND_PID=$!
}

scenario() {   # name extra-kernel-args machine qemu_start-options... -- device-options
    local name=$1 append=$2 machine=$3 opts=() dev
    shift 3
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    dev=$2
    dpdk_write_config
    sed -i 's/^reply_timeout_ms.*/reply_timeout_ms = 5000;/' "$WORK/vhost-recon.conf"
    "$DAEMON" -v --config "$WORK/vhost-recon.conf" > "$WORK/daemon-$name.log" 2>&1 &
    DAEMON_PID=$!
    switch "$name-0"
    for _ in $(seq 200); do grep -q "port0: back-end ready" "$WORK/daemon-$name.log" && break; sleep 0.1; done
    grep -q "port0: back-end ready" "$WORK/daemon-$name.log" || fail "($name) the switch did not connect"

    qemu_start "$name" --no-qmp --machine "$machine" --mode net --append "vr_ping=0.05 $append" "${opts[@]}" \
        --vhost-net "$WORK/port0.sock" ",disable-legacy=on,iommu_platform=on$dev"
    for _ in $(seq 1200); do
        [ "$(answers "$name")" -gt 0 ] && break
        kill -0 "$QEMU_PID" 2>/dev/null || fail "($name) QEMU exited: $(head -3 "$WORK/qemu-$name.log")"
        sleep 0.1
    done
    [ "$(answers "$name")" -gt 0 ] || fail "($name) the guest gets no answer through vhost-recond"
    if [ "$name" = viommu ]; then
        grep -q "front-end IOTLB_MSG" "$WORK/daemon-$name.log" || fail "($name) no IOTLB message: the vIOMMU is not in use"
    else
        ! grep -q "front-end IOTLB_MSG" "$WORK/daemon-$name.log" || fail "($name) IOTLB messages without a vIOMMU"
    fi

    for round in $(seq "$ROUNDS"); do
        sleep 1
        kill -9 "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null
        sleep 1
        local before misses_before t0 t1 after replay entries misses
        before=$(answers "$name")
        misses_before=$(grep -c "back-end IOTLB miss" "$WORK/daemon-$name.log")
        t0=$(now_ms)
        switch "$name-$round"
        for _ in $(seq 3000); do [ "$(answers "$name")" -gt "$before" ] && break; sleep 0.01; done
        t1=$(now_ms)
        after=$(answers "$name")
        [ "$after" -gt "$before" ] || fail "($name) round $round: the guest's pings did not resume"
        replay=$(grep -o "replay done in [0-9]* µs" "$WORK/daemon-$name.log" | tail -1 | grep -o "[0-9]*")
        entries=$(grep -o "vIOMMU: [0-9]* IOTLB entries" "$WORK/daemon-$name.log" | tail -1 | grep -o "[0-9]*")
        misses=$(( $(grep -c "back-end IOTLB miss" "$WORK/daemon-$name.log") - misses_before ))
        # the resume index the new switch got (DPDK logs it): the tx ring's used idx, read
        # from guest memory (through the IOTLB shadow with the vIOMMU: the ring addresses
        # are IOVAs), not 0
        used=$(grep -o "vring base idx:1 last_used_idx:[0-9]*" "$WORK/backend.$name-$round.log" | tail -1 | grep -o "[0-9]*$")
        [ "${used:-0}" -gt 0 ] || fail "($name) round $round: the tx ring's used index was not read from guest memory"
        echo "($name) round $round: switch restart -> first answer $((t1 - t0)) ms; replay ${replay:-?} µs;" \
             "tx used idx recovered $used; IOTLB entries replayed ${entries:-0}; misses relayed before the answer $misses"
        echo "FIGURE $name $((t1 - t0)) ${replay:-0} ${entries:-0} $misses" >> "$WORK/figures"
    done
    sleep 2
    [ "$(answers "$name")" -gt "$after" ] || fail "($name) the pings stopped after the last round"
    carrier=$(grep -c "^CARRIER" "$WORK/guest-$name.log")
    [ "$carrier" = 1 ] && grep -q "^CARRIER 1" "$WORK/guest-$name.log" || {
        grep "^CARRIER" "$WORK/guest-$name.log"; fail "($name) the guest's link went down"; }
    if grep -iE "vhost|iotlb|backend|back-end|virtio" "$WORK/qemu-$name.log"; then
        fail "($name) QEMU logged something about its back-end"
    fi
    ! grep -E "dropping the front-end|refused|not kept|not readable" "$WORK/daemon-$name.log" || fail "($name) the daemon refused something"
    echo "ok ($name): $ROUNDS switch SIGKILLs, pings resumed each time, carrier never dropped, QEMU silent"
    kill "$QEMU_PID"; wait "$QEMU_PID" 2>/dev/null; QEMU_PID=
    dpdk_cleanup; DAEMON_PID= BACKEND_PID=
}

scenario plain "" q35,accel=tcg -- ""
# no_timer_check: under TCG the guest's timer check through the remapped IO-APIC fails and
# the kernel panics ("timer doesn't work through Interrupt-remapped IO-APIC")
scenario viommu "intel_iommu=on no_timer_check" q35,accel=tcg,kernel-irqchip=split --viommu -- ",ats=on"

awk '$1 == "FIGURE" { n[$2]++; s[$2] += $3; if ($3 > mx[$2]) mx[$2] = $3; if (!($2 in mn) || $3 < mn[$2]) mn[$2] = $3 }
     END { for (k in n) printf "outage %s: switch restart -> first answered ping: min %d ms, mean %d ms, max %d ms over %d restarts\n", k, mn[k], s[k] / n[k], mx[k], n[k] }' "$WORK/figures"
echo "2 passed, 0 failed"
