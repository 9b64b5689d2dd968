#!/bin/bash
# Real peers: DPDK testpmd as the virtio-user front-end and as the vhost back-end, through
# vhost-recond. The back-end is killed with SIGKILL and started again ROUNDS times (default
# 3); traffic must resume every time, and the front-end must never see its link change.
# PREEMPT_SWITCH=1 runs a busy loop (nice PREEMPT_SWITCH_NICE, default 19) on the switch's
# forwarding core (core 0) for the test's length: the switch is preempted now and then and
# works in full bursts of 32, so a SIGKILL lands inside a burst more often (how load in CI
# made the packed variant's unmarked burst heads show).
set -u
DAEMON=${1:?usage: [ROUNDS=N] $0 PATH-TO-vhost-recond [QUEUE-PAIRS [packed]]}
ROUNDS=${ROUNDS:-3}
QUEUES=${2:-1}
PACKED=$( [ "${3:-}" = packed ] && echo 1 || echo 0 )
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/dpdk-lib.sh"

command -v dpdk-testpmd >/dev/null || { echo "SKIP: dpdk-testpmd not installed (apt-get install dpdk)"; exit $SKIP; }
why=$(dpdk_setup_hugepages) || { echo "SKIP: no hugepages: $why"; exit $SKIP; }

WORK=$(mktemp -d /tmp/vr-dpdk-XXXXXX)
HOG_PID=
trap '[ -z "$HOG_PID" ] || kill "$HOG_PID"; dpdk_cleanup; [ -n "${KEEP_TEST_LOGS:-}" ] || rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -25 "$f"; done; exit 1; }

if [ "${PREEMPT_SWITCH:-0}" = 1 ]; then
    taskset -c 0 nice -n "${PREEMPT_SWITCH_NICE:-19}" bash -c 'while :; do :; done' &
    HOG_PID=$!
    echo "a busy loop at nice ${PREEMPT_SWITCH_NICE:-19} on core 0 (PREEMPT_SWITCH=1)"
fi
dpdk_write_config
dpdk_start_daemon || fail "daemon did not start"
dpdk_start_backend 0
dpdk_start_frontend
fe_pid=$FRONTEND_PID
dpdk_wait_rx_above "$WORK/frontend.log" 100000 30 || fail "no traffic through vhost-recond"
echo "traffic flows: front-end RX $(dpdk_rx "$WORK/frontend.log")"
if [ "$PACKED" = 1 ]; then
    "$(dirname "$DAEMON")/vhostctl" --socket "$WORK/control" status port0 | grep -q RING_PACKED ||
        fail "the front-end did not negotiate packed rings"
    echo "packed rings negotiated (RING_PACKED in vhostctl status)"
fi

for round in $(seq "$ROUNDS"); do
    kill -9 "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null
    sleep 1
    before=$(dpdk_rx "$WORK/frontend.log")
    completed_before=$(grep -c "completed in guest memory" "$WORK/daemon.log")
    dpdk_start_backend "$round"
    # Packed rings: a SIGKILL in the middle of a burst leaves its head unmarked (DPDK writes
    # its used flags last); the daemon completes it, and traffic must resume then too.
    if ! dpdk_wait_rx_above "$WORK/backend.$round.log" 100000 20 ||
       ! dpdk_wait_rx_above "$WORK/frontend.log" $((before + 100000)) 20; then
        fail "round $round: traffic did not resume (back-end RX $(dpdk_rx "$WORK/backend.$round.log"), front-end RX $before -> $(dpdk_rx "$WORK/frontend.log"))"
    fi
    kill -0 "$fe_pid" 2>/dev/null || fail "the front-end testpmd died"
    completed=$(( $(grep -c "completed in guest memory" "$WORK/daemon.log") - completed_before ))
    echo "round $round: traffic resumed: back-end RX $(dpdk_rx "$WORK/backend.$round.log"), front-end RX $before -> $(dpdk_rx "$WORK/frontend.log")$( [ "$completed" -gt 0 ] && echo ", after completing the unmarked head of the old back-end's last burst on $completed ring(s)")"
done

[ "$FRONTEND_PID" = "$fe_pid" ] || fail "the front-end was restarted"
if grep -qiE "link state change|is down|Failed to|Unexpected" "$WORK/frontend.log"; then
    grep -iE "link state change|is down|Failed to|Unexpected" "$WORK/frontend.log" | head
    fail "the front-end noticed the restarts"
fi
n=$(grep -c "replay done in" "$WORK/daemon.log")
[ "$n" -eq "$ROUNDS" ] || fail "expected $ROUNDS replays in the daemon log, found $n"
rings=$((2 * QUEUES))
n=$(grep -c "$rings rings kicked" "$WORK/daemon.log")
[ "$n" -eq "$ROUNDS" ] || fail "expected every replay to kick all $rings rings, found $n such replays"
grep -o "replay done in [0-9]* µs" "$WORK/daemon.log" | sed 's/^/daemon: /'
kill "$FRONTEND_PID" "$BACKEND_PID"; wait "$FRONTEND_PID" "$BACKEND_PID" 2>/dev/null
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; rc=$?
DAEMON_PID=
[ "$rc" = 0 ] || fail "vhost-recond exited with status $rc on SIGTERM"
if [ "$PACKED" = 1 ]; then
    guesses=$(grep -c "cannot be recovered for sure" "$WORK/daemon.log")
    completed=$(grep -c "completed in guest memory" "$WORK/daemon.log")
    echo "packed rings: $completed of $((ROUNDS * rings)) ring resumes completed a burst head the old back-end" \
         "left unmarked, $guesses were a best guess"
fi
echo "PASS: $QUEUES queue pair(s)$( [ "$PACKED" = 1 ] && echo ", packed rings"), $ROUNDS back-end SIGKILL restarts, traffic resumed every time, front-end never noticed"
