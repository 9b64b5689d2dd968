# shellcheck shell=bash
# Helpers for running vhost-recond between two real DPDK testpmd processes: a virtio-user
# front-end (the "app") and a vhost PMD back-end (the "switch"). Sourced by the real-peer
# tests and by the demo. Each caller sets WORK (a scratch directory), DAEMON (the binary) and
# optionally SOCKDIR (where port0.sock and port0.vswitch.sock are; default WORK) and QUEUES
# (queue pairs, default 1; more than one needs the control queue, cq=1, on the front-end)
# and PACKED=1 (packed rings: packed_vq=1, in_order=0 on the front-end).

SKIP=77

# Hugepages for DPDK: 1024 x 2 MiB and a hugetlbfs mount. Fails (returns 1) when not root
# or the kernel cannot give them.
dpdk_setup_hugepages() {
    [ "$(id -u)" = 0 ] || { echo "not root: cannot reserve hugepages"; return 1; }
    local have
    have=$(cat /proc/sys/vm/nr_hugepages)
    if [ "$have" -lt 1024 ]; then
        echo 1024 > /proc/sys/vm/nr_hugepages 2>/dev/null || true
        have=$(cat /proc/sys/vm/nr_hugepages)
    fi
    [ "$have" -ge 512 ] || { echo "only $have hugepages available"; return 1; }
    mkdir -p /dev/hugepages
    mountpoint -q /dev/hugepages || mount -t hugetlbfs none /dev/hugepages || return 1
    return 0
}

dpdk_write_config() {
    cat > "$WORK/vhost-recon.conf" <<CONF
control = "$WORK/control";
reply_timeout_ms = 5000;
ports = ( { name = "port0";
            frontend = { path = "$WORK/port0.sock"; };
            backend  = { path = "$WORK/port0.vswitch.sock"; }; } );
CONF
}

dpdk_start_daemon() {
    "$DAEMON" --config "$WORK/vhost-recon.conf" > "$WORK/daemon.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 100); do
        grep -q "vhost-recond running" "$WORK/daemon.log" && return 0
        sleep 0.05
    done
    echo "vhost-recond did not start:"; cat "$WORK/daemon.log"
    return 1
}

# The switch: vhost PMD in client mode (as OVS dpdkvhostuserclient), echoing with mac
# forwarding. Its forwarding core is core 0, the front-end's core 1.
dpdk_start_backend() {
    local n=$1
    dpdk-testpmd -l 0-1 --main-lcore 1 --no-pci --file-prefix=vr-be --huge-dir=/dev/hugepages \
        --huge-unlink -m 256 --vdev "net_vhost0,iface=${SOCKDIR:-$WORK}/port0.vswitch.sock,queues=${QUEUES:-1},client=1" \
        -- -a --nb-cores=1 --rxq=${QUEUES:-1} --txq=${QUEUES:-1} --total-num-mbufs=8192 --forward-mode=mac --stats-period 1 \
        < /dev/null > "$WORK/backend.$n.log" 2>&1 &
    BACKEND_PID=$!
}

# The app: virtio-user connecting to vhost-recond, generating traffic (flowgen sends
# continuously and drains what comes back, so lost packets do not stall it).
dpdk_start_frontend() {
    dpdk-testpmd -l 0-1 --no-pci --file-prefix=vr-fe --in-memory --single-file-segments -m 256 \
        --vdev "net_virtio_user0,path=${SOCKDIR:-$WORK}/port0.sock,queues=${QUEUES:-1}$( [ "${QUEUES:-1}" -gt 1 ] && echo ,cq=1 )$( [ "${PACKED:-0}" = 1 ] && echo ,packed_vq=1,in_order=0 )" \
        -- -a --nb-cores=1 --rxq=${QUEUES:-1} --txq=${QUEUES:-1} --total-num-mbufs=8192 --forward-mode=flowgen --stats-period 1 \
        < /dev/null > "$WORK/frontend.log" 2>&1 &
    FRONTEND_PID=$!
}

# Latest port RX-packets counter printed in a testpmd log (0 if none yet).
dpdk_rx() {
    local v
    v=$(grep -o 'RX-packets: *[0-9]*' "$1" 2>/dev/null | tail -1 | grep -o '[0-9]*$')
    echo "${v:-0}"
}

# testpmd's own receive rate (packets/s) from its latest stats print.
dpdk_rx_pps() {
    local v
    v=$(grep -o 'Rx-pps: *[0-9]*' "$1" 2>/dev/null | tail -1 | grep -o '[0-9]*$')
    echo "${v:-0}"
}

# Waits until the RX counter in log $1 exceeds $2, for up to $3 seconds.
dpdk_wait_rx_above() {
    local log=$1 above=$2 secs=$3 i
    for i in $(seq $((secs * 10))); do
        [ "$(dpdk_rx "$log")" -gt "$above" ] && return 0
        sleep 0.1
    done
    return 1
}

dpdk_cleanup() {
    # Only these: a caller may have other children (a systemd sandbox) to keep.
    # (under set -e, the status of wait for a killed process must not end the caller's trap)
    local pid
    for pid in ${FRONTEND_PID:-} ${BACKEND_PID:-} ${DAEMON_PID:-}; do
        { kill -9 "$pid" && wait "$pid"; } 2>/dev/null || true
    done
    return 0
}
