#!/bin/bash
# A live demo: vhost-recond on the example config (conf/vhost-recon.conf), a DPDK testpmd
# "app" (virtio-user) on port0, and a DPDK testpmd "switch" (vhost PMD) that is killed
# with SIGKILL and started again while the app sends traffic. Needs root (hugepages).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash tests/setup.sh
[ -f build/build.ninja ] || meson setup build > /dev/null
meson compile -C build > /dev/null

DAEMON=$ROOT/build/daemon/vhost-recond
. tests/real/dpdk-lib.sh
why=$(dpdk_setup_hugepages) || { echo "The demo needs hugepages for DPDK: $why"; exit 1; }
WORK=$(mktemp -d /tmp/vhost-recon-demo-XXXXXX)
trap 'dpdk_cleanup; rm -rf "$WORK"' EXIT

# The example config as shipped: ports port0 and port1 under /run/vhost-recon.
"$DAEMON" --config conf/vhost-recon.conf > "$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
sleep 0.3
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show_daemon() { sed -e 's/^<[0-9]>/  vhost-recond: /' "$WORK/daemon.log" | tail -n +"$1"; }
rate() {   # packets/s the app receives, from the second stats print from now on, so that the
           # interval testpmd measured lies wholly after what just happened
    local n; n=$(grep -c Rx-pps "$WORK/frontend.log")
    while [ "$(grep -c Rx-pps "$WORK/frontend.log")" -lt $((n + 2)) ]; do sleep 0.2; done
    dpdk_rx_pps "$WORK/frontend.log"
}
say "vhost-recond started on conf/vhost-recon.conf"
show_daemon 1

# The peers use the example config's port0 sockets.
SOCKDIR=/run/vhost-recon
dpdk_start_backend 0
say "switch (testpmd, vhost PMD client=1) started; app (testpmd, virtio-user) started"
dpdk_start_frontend
fe_pid=$FRONTEND_PID
dpdk_wait_rx_above "$WORK/frontend.log" 100000 30 || { echo "no traffic"; exit 1; }
lines=$(wc -l < "$WORK/daemon.log")
echo "  app receives $(rate) packets/s through the switch"

for round in 1 2; do
    say "kill -9 the switch (round $round)"
    kill -9 "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null || true
    echo "  app receives $(rate) packets/s while the switch is down"
    say "start the switch again"
    dpdk_start_backend "$round"
    dpdk_wait_rx_above "$WORK/backend.$round.log" 100000 30 || { echo "traffic did not resume"; exit 1; }
    show_daemon $((lines + 1)); lines=$(wc -l < "$WORK/daemon.log")
    echo "  app receives $(rate) packets/s again"
done

say "the app never noticed"
echo "  app pid $fe_pid still running: $(kill -0 "$fe_pid" && echo yes)"
echo "  link changes the app logged: $(grep -ciE 'link state change|is down' "$WORK/frontend.log" || true)"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=
