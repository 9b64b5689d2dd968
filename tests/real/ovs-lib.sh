# shellcheck shell=bash
# Open vSwitch with DPDK (Debian's openvswitch-switch-dpdk, 3.1) as vhost-recond's back-end,
# run without systemd in a private directory: its own ovsdb-server, database, sockets, logs
# and DPDK file prefix, so that it never touches a system OVS or another test's. Sourced by
# tests/real/test-ovs.sh.
#
# ovs_setup DIR creates the database and starts ovsdb-server; ovs_start_vswitchd starts
# ovs-vswitchd-dpdk (in the background, pid in OVS_VSWITCHD_PID); ovs_vsctl and ovs_ofctl
# talk to them; ovs_cleanup stops both and frees what DPDK left behind.
#
# ovs-vswitchd runs in a network namespace of its own (unshare --net): a netdev bridge's
# local port is a Linux tap device, and a private namespace keeps it off the host (and takes
# it away when ovs-vswitchd is killed). The vhost-user sockets are files, so they work
# across namespaces. An operator's OVS does not need this.

OVS_VSWITCHD_BIN=${OVS_VSWITCHD_BIN:-/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk}
OVS_SCHEMA=${OVS_SCHEMA:-/usr/share/openvswitch/vswitch.ovsschema}
OVS_DIR=
OVS_VSWITCHD_PID=
OVS_PREFIX=

# Why OVS-DPDK cannot run here (empty output and status 0 when it can).
ovs_missing() {
    local p
    for p in "$OVS_VSWITCHD_BIN" ovsdb-tool ovsdb-server ovs-vsctl ovs-ofctl ovs-appctl; do
        command -v "$p" > /dev/null || { echo "$p not installed (apt-get install openvswitch-switch-dpdk)"; return 1; }
    done
    [ -r "$OVS_SCHEMA" ] || { echo "$OVS_SCHEMA missing (apt-get install openvswitch-common)"; return 1; }
    command -v unshare > /dev/null || { echo "unshare not installed (util-linux)"; return 1; }
    return 0
}

# Closes every fd above 2 of the calling (sub)shell. The daemons started here must not keep
# the caller's fds: flock(1) hands its lock fd on to the command it runs, and ovsdb-server
# (detached, in a session of its own) or an ovs-vswitchd that outlived the test would hold
# that lock for as long as they live.
ovs_close_fds() {
    local fd
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}
        [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2> /dev/null
    done
    return 0
}

ovs_vsctl() { ovs-vsctl --db="unix:$OVS_DIR/db.sock" --timeout=20 "$@"; }
# ovs-ofctl finds BRIDGE.mgmt in OVS_RUNDIR
ovs_ofctl() { OVS_RUNDIR=$OVS_DIR ovs-ofctl "$@"; }
ovs_appctl() { OVS_RUNDIR=$OVS_DIR ovs-appctl "$@"; }

# ovs_setup DIR: a fresh database in DIR, ovsdb-server serving it on DIR/db.sock, and the
# DPDK settings: init DPDK, 512 MB of hugepages, the PMD thread on core 1, the other DPDK
# threads on core 0, no PCI devices, a file prefix of its own.
ovs_setup() {
    OVS_DIR=$1
    OVS_PREFIX=vr-ovs-$$-$RANDOM
    export OVS_RUNDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR
    ovsdb-tool create "$OVS_DIR/conf.db" "$OVS_SCHEMA" || return 1
    ( ovs_close_fds
      exec ovsdb-server "$OVS_DIR/conf.db" --remote="punix:$OVS_DIR/db.sock" \
        --pidfile="$OVS_DIR/ovsdb-server.pid" --log-file="$OVS_DIR/ovsdb-server.log" \
        --unixctl="$OVS_DIR/ovsdb-server.ctl" --no-chdir --detach ) || return 1
    ovs_vsctl --no-wait init || return 1
    ovs_vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true \
        other_config:dpdk-socket-mem=512 other_config:pmd-cpu-mask=0x2 \
        other_config:dpdk-lcore-mask=0x1 \
        "other_config:dpdk-extra=--no-pci --file-prefix=$OVS_PREFIX --huge-unlink"
}

# ovs_start_vswitchd N: starts ovs-vswitchd-dpdk, logging to DIR/ovs-vswitchd.N.log. Returns
# at once.
ovs_start_vswitchd() {
    local n=$1
    ( ovs_close_fds
      exec unshare --net "$OVS_VSWITCHD_BIN" "unix:$OVS_DIR/db.sock" --no-chdir \
        --pidfile="$OVS_DIR/ovs-vswitchd.pid" --unixctl="$OVS_DIR/ovs-vswitchd.ctl" \
        --log-file="$OVS_DIR/ovs-vswitchd.$n.log" -vconsole:off ) \
        < /dev/null > "$OVS_DIR/ovs-vswitchd.$n.out" 2>&1 &
    OVS_VSWITCHD_PID=$!
}

# ovs_wait_dpdk SECONDS: until ovs-vswitchd reports DPDK initialized (the database's
# Open_vSwitch dpdk_initialized column).
ovs_wait_dpdk() {
    local i
    for i in $(seq $(($1 * 10))); do
        kill -0 "$OVS_VSWITCHD_PID" 2> /dev/null || { echo "ovs-vswitchd exited"; return 1; }
        [ "$(ovs_vsctl get Open_vSwitch . dpdk_initialized 2> /dev/null)" = true ] && return 0
        sleep 0.1
    done
    echo "DPDK not initialized after $1 s"
    return 1
}

ovs_kill_vswitchd() {
    [ -n "$OVS_VSWITCHD_PID" ] || return 0
    kill -9 "$OVS_VSWITCHD_PID" 2> /dev/null
    wait "$OVS_VSWITCHD_PID" 2> /dev/null
    OVS_VSWITCHD_PID=
    return 0
}

# A clean stop, as an operator or a package upgrade does it: ovs-appctl exit.
ovs_stop_vswitchd() {
    [ -n "$OVS_VSWITCHD_PID" ] || return 0
    ovs_appctl -t "$OVS_DIR/ovs-vswitchd.ctl" exit || return 1
    local i
    for i in $(seq 100); do
        kill -0 "$OVS_VSWITCHD_PID" 2> /dev/null || break
        sleep 0.1
    done
    kill -0 "$OVS_VSWITCHD_PID" 2> /dev/null && { echo "ovs-vswitchd did not exit"; return 1; }
    wait "$OVS_VSWITCHD_PID" 2> /dev/null
    local rc=$?
    OVS_VSWITCHD_PID=
    [ "$rc" = 0 ] || { echo "ovs-vswitchd exited with status $rc"; return 1; }
    return 0
}

# ovs_add_flow_retry BRIDGE FLOW SECONDS: installs an OpenFlow rule as soon as the bridge's
# OpenFlow socket answers (a controller reconnecting to a restarted switch). After a SIGKILL
# the old socket file stays until ovs-vswitchd binds it again, so a refused connection is
# retried.
ovs_add_flow_retry() {
    local i
    for i in $(seq $(($3 * 20))); do
        ovs_ofctl add-flow "$1" "$2" 2> /dev/null && return 0
        sleep 0.05
    done
    ovs_ofctl add-flow "$1" "$2"
}

# ovs_port_pkts BRIDGE OFPORT rx|tx: a live packet counter of the port (0 when OVS does not
# answer). "tx" is what OVS has put into the front-end's receive ring, "rx" what it took
# from the front-end's transmit ring. Counters start at 0 with each ovs-vswitchd and port.
ovs_port_pkts() {
    local v
    v=$(ovs_ofctl dump-ports "$1" "$2" 2> /dev/null | grep -o "$3 pkts=[0-9]*" | head -1 | cut -d= -f2)
    echo "${v:-0}"
}

ovs_cleanup() {
    [ -n "$OVS_DIR" ] || return 0
    ovs_kill_vswitchd
    local pid
    pid=$(cat "$OVS_DIR/ovsdb-server.pid" 2> /dev/null)
    [ -n "$pid" ] && kill -9 "$pid" 2> /dev/null
    # --huge-unlink leaves no files; these are only left if that did not take
    [ -n "$OVS_PREFIX" ] && rm -rf /dev/hugepages/"$OVS_PREFIX"map_* /var/run/dpdk/"$OVS_PREFIX"
    return 0
}
