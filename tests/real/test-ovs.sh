#!/bin/bash
# Open vSwitch with DPDK 3.1 (openvswitch-switch-dpdk) as the switch behind vhost-recond: OVS
# has a dpdkvhostuserclient port on vhost-recond's back-end socket, and one OpenFlow rule,
# in_port=vhu0,actions=in_port, sends every packet back to the front-end. Two front-ends,
# one after the other:
#  (app)   DPDK testpmd, virtio-user, flowgen;
#  (guest) QEMU 7.2 (TCG) with a Linux guest (tests/qemu/make-guest.sh) pinging a neighbour
#          that does not exist; the reflected packets are the guest's rx_packets.
# For each, three disruptions of the switch: ovs-vswitchd killed with SIGKILL and started
# again; stopped cleanly (ovs-appctl exit) and started again; the port deleted and added
# again with ovs-vsctl. Each time the front-end's traffic must resume and the front-end must
# not notice: the app logs no link change, QEMU logs nothing, the guest's carrier never
# drops, neither process is restarted. The time from OVS's start (or the add-port) to the
# link coming up, to the rule being installed and to packets reaching the front-end again is
# printed for each.
#
# OpenFlow rules live in ovs-vswitchd's memory, not in its database: a restarted
# ovs-vswitchd has an empty flow table (with fail_mode=secure it forwards nothing). This
# test reinstalls the rule after every restart as an SDN controller does when its switch
# reconnects: as soon as the bridge's OpenFlow socket answers. Deleting and adding the port
# keeps ovs-vswitchd and its flow table; ofport_request=1 gives the port back its OpenFlow
# number, so the rule applies again without being reinstalled (the test checks that).
#
# A case that cannot run here (no OVS, no testpmd, no QEMU, no hugepages, not root) is
# skipped with the reason and the test exits 77; under CI=true it fails instead.
set -u
DAEMON=${1:?usage: $0 PATH-TO-vhost-recond}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/dpdk-lib.sh"
. "$HERE/ovs-lib.sh"

test_start=$(date +%s.%N)
ROOT_WORK=$(mktemp -d /tmp/vr-ovs-XXXXXX)
WORK=$ROOT_WORK
VHOSTCTL=$(dirname "$DAEMON")/vhostctl
QEMU_PID= CTL_PID= MONITOR_PID=
cleanup() {
    [ -n "$CTL_PID" ] && kill "$CTL_PID" 2> /dev/null
    [ -n "$MONITOR_PID" ] && kill "$MONITOR_PID" 2> /dev/null
    [ -n "$QEMU_PID" ] && { kill -9 "$QEMU_PID" 2> /dev/null; wait "$QEMU_PID" 2> /dev/null; }
    ovs_cleanup
    dpdk_cleanup
    rm -rf "/var/run/dpdk/vr-ovs-fe-$$"
    [ -n "${KEEP_TEST_LOGS:-}" ] || rm -rf "$ROOT_WORK"
}
trap cleanup EXIT
trap 'exit 1' TERM INT   # meson's timeout: clean up too (ovsdb-server runs detached)

passed=0 skipped=0 cannot_failed=0
cannot() {   # CASE REASON: a case that cannot run here
    if [ "${CI:-}" = true ]; then
        echo "FAIL ($1): cannot run under CI: $2"
        cannot_failed=1
    else
        echo "SKIP ($1): $2"
        skipped=$((skipped + 1))
    fi
}
fail() {
    echo "FAIL ($CASE): $*"
    local f
    for f in "$WORK"/*.log "$WORK"/ovs/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f"
        grep -vE '^\[ |coverage\|INFO' "$f" | tail -25
    done
    exit 1
}
now() { date +%s.%N; }
# seconds from T0 to the last EVENT of port0 that vhostctl monitor printed (its timestamps
# are the daemon's)
monitor_since() {   # EVENT T0
    local ts
    ts=$(grep " port0 $1" "$WORK/monitor.log" | tail -1 | cut -d' ' -f1)
    [ -n "$ts" ] || { echo "?"; return; }
    awk -v a="$2" -v b="$(date -d "$ts" +%s.%N)" 'BEGIN { printf "%.3f", b - a }'
}
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
wait_for() {   # FILE PATTERN SECONDS
    local i
    for i in $(seq $(($3 * 10))); do grep -qE "$2" "$1" 2> /dev/null && return 0; sleep 0.1; done
    return 1
}

# What every case needs: root, hugepages, OVS-DPDK.
common_reason=
if [ "$(id -u)" != 0 ]; then
    common_reason="not root (OVS-DPDK needs hugepages)"
elif ! common_reason=$(ovs_missing); then
    :
elif ! common_reason=$(dpdk_setup_hugepages); then
    common_reason="no hugepages: $common_reason"
else
    common_reason=
fi

ovs_add_vhost_port() {
    ovs_vsctl add-port br0 vhu0 -- set Interface vhu0 type=dpdkvhostuserclient \
        "options:vhost-server-path=$WORK/port0.vswitch.sock" ofport_request=1
}
FLOW="in_port=vhu0,actions=in_port"

# One vhost-recond port (port0) and one OVS (its own directory, database and DPDK prefix)
# with bridge br0 and port vhu0 on port0's back-end socket, the rule installed.
switch_up() {
    WORK=$ROOT_WORK/$CASE
    mkdir -p "$WORK/ovs"
    dpdk_write_config
    dpdk_start_daemon || fail "vhost-recond did not start"
    # the port's events with the daemon's own timestamps (µs), to time the switch's return
    "$VHOSTCTL" --socket "$WORK/control" monitor > "$WORK/monitor.log" 2>&1 &
    MONITOR_PID=$!
    ovs_setup "$WORK/ovs" > "$WORK/ovs-setup.log" 2>&1 || fail "cannot set up ovsdb-server: $(tail -3 "$WORK/ovs-setup.log")"
    ovs_start_vswitchd 0
    why=$(ovs_wait_dpdk 60) || fail "ovs-vswitchd: $why"
    ovs_vsctl add-br br0 -- set Bridge br0 datapath_type=netdev fail_mode=secure || fail "add-br"
    ovs_add_vhost_port || fail "add-port"
    ovs_ofctl add-flow br0 "$FLOW" || fail "add-flow"
    wait_for "$WORK/daemon.log" "port0: back-end ready" 20 || fail "OVS did not connect to vhost-recond's back-end socket"
}

switch_down() {
    kill "$MONITOR_PID"; wait "$MONITOR_PID" 2> /dev/null; MONITOR_PID=
    ovs_stop_vswitchd > /dev/null || ovs_kill_vswitchd
    ovs_cleanup
    OVS_DIR=
    kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; local rc=$?
    DAEMON_PID=
    [ "$rc" = 0 ] || fail "vhost-recond exited with status $rc on SIGTERM"
}

# The controller's part after the switch comes back: as soon as the bridge's OpenFlow socket
# answers, look at its table and put the rule back if it is gone. Prints the number of rules
# found and when the rule was back in place (seconds since T0), or "kept".
controller() {   # KIND T0
    local i rules
    for i in $(seq 1500); do
        rules=$(ovs_ofctl --timeout=10 dump-flows br0 2> /dev/null) && break
        sleep 0.02
    done
    rules=$(echo "$rules" | grep -c "actions=")
    if [ "$1" = port ] && [ "$rules" = 1 ]; then
        echo "$rules kept"
        return 0
    fi
    for i in $(seq 1500); do
        ovs_ofctl --timeout=10 add-flow br0 "$FLOW" 2> /dev/null && { echo "$rules $(since "$2")"; return 0; }
        sleep 0.02
    done
    echo "$rules never"
}

# disrupt KIND N: takes the switch away (sigkill, exit, port), waits 1 s, brings it back,
# and measures from the moment it is started again (or the port added again): the link up
# in vhost-recond, the rule back in place, OVS putting packets into the front-end's receive
# ring again (its tx counter on the port), the front-end's own counter moving. The back-end's
# connect and the link up are timed by vhostctl monitor's events (the daemon's clock); the
# rest is polled every 20 ms plus the time an ovs-ofctl call takes (tens of ms).
# FE_COUNT: the front-end's receive counter; OVS_MIN, FE_MIN: how many packets count as
# "traffic is back" on each side.
disrupt() {
    local kind=$1 n=$2 links gone fe_before link_at='' ovs_at='' fe_at='' t0 i rules flow_at
    links=$(grep -c "port0: link up" "$WORK/daemon.log")
    gone=$(grep -c "port0: back-end disconnected" "$WORK/daemon.log")
    case $kind in
        sigkill) ovs_kill_vswitchd ;;
        exit) ovs_stop_vswitchd > "$WORK/stop.out" || fail "ovs-appctl exit: $(cat "$WORK/stop.out")" ;;
        port) ovs_vsctl del-port br0 vhu0 || fail "del-port" ;;
    esac
    for i in $(seq 50); do
        [ "$(grep -c "port0: back-end disconnected" "$WORK/daemon.log")" -gt "$gone" ] && break
        sleep 0.1
    done
    [ "$(grep -c "port0: back-end disconnected" "$WORK/daemon.log")" -gt "$gone" ] ||
        fail "$kind: vhost-recond did not see the switch leave"
    sleep 1
    fe_before=$($FE_COUNT)
    rm -f "$WORK/controller.out"
    t0=$(now)
    case $kind in
        sigkill | exit) ovs_start_vswitchd "$n" ;;
        port) ovs_add_vhost_port || fail "add-port" ;;
    esac
    controller "$kind" "$t0" > "$WORK/controller.out" &
    CTL_PID=$!
    for i in $(seq 1500); do
        [ -z "$link_at" ] && [ "$(grep -c "port0: link up" "$WORK/daemon.log")" -gt "$links" ] && link_at=$(since "$t0")
        [ -z "$ovs_at" ] && [ "$(ovs_port_pkts br0 1 tx)" -gt "$OVS_MIN" ] && ovs_at=$(since "$t0")
        [ -z "$fe_at" ] && [ "$($FE_COUNT)" -gt $((fe_before + FE_MIN)) ] && fe_at=$(since "$t0")
        [ -n "$link_at" ] && [ -n "$ovs_at" ] && [ -n "$fe_at" ] && break
        kill -0 "$FE_PID" 2> /dev/null || fail "$kind: the front-end died"
        sleep 0.02
    done
    wait "$CTL_PID"
    CTL_PID=
    sleep 0.2   # the monitor's events are written as they happen; let the last ones land
    read -r rules flow_at < "$WORK/controller.out"
    [ -n "$link_at" ] || fail "$kind: vhost-recond's link did not come up again within 30 s"
    case $kind/$flow_at in
        port/kept) flow_at="kept (not reinstalled)" ;;
        port/*) fail "port: the rule is gone after del-port/add-port ($rules rules)" ;;
        */never) fail "$kind: cannot reinstall the rule" ;;
        *) [ "$rules" = 0 ] || fail "$kind: the restarted switch already had $rules rules"
           flow_at="reinstalled after $flow_at s (table was empty)" ;;
    esac
    [ -n "$ovs_at" ] || fail "$kind: OVS does not send to the front-end again"
    [ -n "$fe_at" ] || fail "$kind: the front-end receives nothing after the restart ($fe_before -> $($FE_COUNT))"
    local what=started
    [ "$kind" = port ] && what="port added"
    echo "$CASE $kind: OVS $what; back-end connected after $(monitor_since backend-connected "$t0") s," \
         "link up after $(monitor_since link-up "$t0") s, rule $flow_at," \
         "OVS sends to the front-end after $ovs_at s, front-end counter moves after $fe_at s" \
         "($fe_before -> $($FE_COUNT)); $(grep -o 'link up (down for [0-9.]* s)' "$WORK/daemon.log" | tail -1)"
    grep -o "port0: replay done in [0-9]* µs.*" "$WORK/daemon.log" | tail -1 | sed "s/^/$CASE $kind: daemon: /"
}

# The disruptions, then: same front-end process, the daemon replayed 3 times.
disrupt_all() {
    local n=1 kind
    for kind in sigkill exit port; do
        disrupt "$kind" "$n"
        n=$((n + 1))
    done
    [ "$(grep -c "port0: replay done in" "$WORK/daemon.log")" = 3 ] || fail "expected 3 replays in the daemon log"
    grep -q "incompatible\|replay failed" "$WORK/daemon.log" && fail "a replay failed"
    kill -0 "$FE_PID" 2> /dev/null || fail "the front-end is gone"
    return 0
}

# (app) DPDK virtio-user, flowgen. Its forwarding core is core 0 (--main-lcore 1): OVS's PMD
# thread busy-polls core 1.
CASE=app
fe_testpmd_rx() { dpdk_rx "$WORK/frontend.log"; }
if [ -n "$common_reason" ]; then
    cannot app "$common_reason"
elif ! command -v dpdk-testpmd > /dev/null; then
    cannot app "dpdk-testpmd not installed (apt-get install dpdk-dev)"
else
    case_start=$(now)
    switch_up
    dpdk-testpmd -l 0-1 --main-lcore 1 --no-pci --file-prefix="vr-ovs-fe-$$" --in-memory --single-file-segments -m 256 \
        --vdev "net_virtio_user0,path=$WORK/port0.sock,queues=1" \
        -- -a --nb-cores=1 --total-num-mbufs=8192 --forward-mode=flowgen --stats-period 1 \
        < /dev/null > "$WORK/frontend.log" 2>&1 &
    FRONTEND_PID=$!
    FE_PID=$FRONTEND_PID
    dpdk_wait_rx_above "$WORK/frontend.log" 100000 30 || fail "no traffic through vhost-recond and OVS"
    echo "app: traffic flows: testpmd RX $(fe_testpmd_rx) (OVS reflects: $(ovs_ofctl dump-flows br0 --no-stats | grep actions | sed 's/^ *//'))"
    FE_COUNT=fe_testpmd_rx OVS_MIN=1000 FE_MIN=100000
    disrupt_all
    [ "$FRONTEND_PID" = "$FE_PID" ] || fail "the app was restarted"
    "$VHOSTCTL" --socket "$WORK/control" status port0 > "$WORK/status.out" || fail "vhostctl status"
    sed 's/^/app: vhostctl: /' "$WORK/status.out"
    grep -qE "replays: +3 ok, 0 failed" "$WORK/status.out" || fail "vhostctl does not count 3 replays"
    if grep -qiE "link state change|is down|Failed to|Unexpected" "$WORK/frontend.log"; then
        grep -iE "link state change|is down|Failed to|Unexpected" "$WORK/frontend.log" | head
        fail "the app noticed the restarts"
    fi
    kill "$FRONTEND_PID"; wait "$FRONTEND_PID" 2> /dev/null; FRONTEND_PID=
    switch_down
    echo "ok (app): testpmd behind vhost-recond, OVS-DPDK SIGKILLed, stopped with ovs-appctl exit, its port deleted and re-added: traffic back each time, no link change in the app ($(since "$case_start") s)"
    passed=$((passed + 1))
fi

# (guest) QEMU with a Linux guest on virtio-net. Guest memory is a shared memfd, so that OVS
# can map it.
CASE=guest
fe_guest_rx() { sed -n 's/^RX \([0-9]*\) .*/\1/p' "$WORK/guest.log" 2> /dev/null | tail -1 | grep . || echo 0; }
if [ -n "$common_reason" ]; then
    cannot guest "$common_reason"
elif ! command -v qemu-system-x86_64 > /dev/null; then
    cannot guest "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
elif ! GUEST=$(bash "$HERE/../qemu/make-guest.sh" 2> "$ROOT_WORK/make-guest.log"); then
    cannot guest "cannot build the guest from Debian packages: $(tail -1 "$ROOT_WORK/make-guest.log")"
else
    case_start=$(now)
    switch_up
    # vectors=0: QEMU 7.2 under TCG crashes when the guest enables MSI-X on a vhost-user net device
    qemu-system-x86_64 -machine pc,accel=tcg -cpu max -smp 1 -m 256 \
        -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
        -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" -append "console=ttyS0 quiet vr=reflect" \
        -display none -monitor none -serial "file:$WORK/guest.log" \
        -chardev socket,id=c0,path="$WORK/port0.sock" \
        -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0,vectors=0 \
        > "$WORK/qemu.log" 2>&1 &
    QEMU_PID=$!
    FE_PID=$QEMU_PID
    t0=$(now)
    wait_for "$WORK/guest.log" "GUEST READY" 120 || fail "the guest did not come up"
    for i in $(seq 300); do [ "$(fe_guest_rx)" -gt 20 ] && break; sleep 0.1; done
    [ "$(fe_guest_rx)" -gt 20 ] || fail "the guest receives nothing back through vhost-recond and OVS"
    echo "guest: up and receiving its reflected pings after $(since "$t0") s: rx_packets $(fe_guest_rx)"
    qemu_lines=$(wc -l < "$WORK/qemu.log")
    FE_COUNT=fe_guest_rx OVS_MIN=3 FE_MIN=5
    disrupt_all
    [ "$QEMU_PID" = "$FE_PID" ] || fail "QEMU was restarted"
    if [ "$(wc -l < "$WORK/qemu.log")" != "$qemu_lines" ]; then
        cat "$WORK/qemu.log"
        fail "QEMU logged something during the switch's restarts"
    fi
    if [ "$(grep -c '^CARRIER' "$WORK/guest.log")" != 1 ] || ! grep -q '^CARRIER 1' "$WORK/guest.log"; then
        grep '^CARRIER' "$WORK/guest.log"
        fail "the guest's link went down"
    fi
    kill "$QEMU_PID"; wait "$QEMU_PID" 2> /dev/null; QEMU_PID=
    switch_down
    echo "ok (guest): QEMU guest behind vhost-recond, OVS-DPDK SIGKILLed, stopped with ovs-appctl exit, its port deleted and re-added: the guest's packets back each time, carrier never dropped, QEMU logged nothing ($(since "$case_start") s)"
    passed=$((passed + 1))
fi

[ "$cannot_failed" = 0 ] || exit 1
if [ "$skipped" -gt 0 ]; then
    echo "SKIP: $skipped of 2 cases could not run ($passed passed)"
    exit 77
fi
echo "PASS: $passed of 2 cases in $(since "$test_start") s"
