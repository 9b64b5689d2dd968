#!/bin/bash
# vhost-recond crashing under a real systemd (PID 1 of private namespaces), DPDK testpmd on
# both sides under traffic (a virtio-user app, a vhost PMD switch), vhost-recon@port0 as
# installed (Restart=on-failure, RestartSec=100ms, the fd store):
#  1. the daemon's main process killed with SIGKILL $KILLS times (systemctl kill -s SIGKILL
#     --kill-who=main): each time systemd starts a new one that adopts the fd store; the app
#     never notices (same process, no link change) and its traffic never stops (the switch's
#     and the app's counters move while the daemon is down and after);
#  2. then the switch killed and started again: it gets the device, replayed from what
#     survived, and the traffic resumes;
#  3. the same with the watchdog firing (a hung event loop, test hook SIGUSR1, WatchdogSec=1s:
#     systemd's SIGABRT) and with an abort (test hook SIGUSR2);
#  4. systemctl restart and a clean systemctl stop still work.
# Prints the time from SIGKILL to the daemon serving again (its control socket answers with
# the front-end connected).
set -u
BUILD=${1:?usage: $0 BUILD-DIR}
KILLS=${KILLS:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/sandbox.sh"
. "$HERE/../real/dpdk-lib.sh"

why=$(sandbox_check)
[ -z "$why" ] || { echo "SKIP: a private systemd cannot run here: $why"; exit 77; }
command -v dpdk-testpmd >/dev/null || { echo "SKIP: dpdk-testpmd not installed"; exit 77; }
reason=$(dpdk_setup_hugepages) || { echo "SKIP: $reason"; exit 77; }

WORK=$(mktemp -d /var/lib/vr-systemd-crash-XXXXXX)
chmod 0755 "$WORK"
NAME=vr-crash-$$
cleanup() {
    dpdk_cleanup
    sandbox_stop "$WORK" "$NAME"
    [ -n "${KEEP_TEST_LOGS:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    sandbox_run "$WORK" journalctl --no-pager -n 80 2>/dev/null | tail -80
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done
    exit 1
}
sd() { sandbox_run "$WORK" "$@"; }
U=vhost-recon@port0
journal_count() { sd journalctl --no-pager -u $U 2>/dev/null | grep -c -- "$1"; }
wait_journal_count() {   # pattern count [timeout s]
    local i
    for i in $(seq $((${3:-10} * 20))); do
        [ "$(journal_count "$1")" -ge "$2" ] && return 0
        sleep 0.05
    done
    return 1
}
main_pid() { sd systemctl show -p MainPID --value $U; }
# The daemon serves again: its control socket answers and port0 has its front-end.
serving() {
    "$CTL" --socket "$ROOT/run/vhost-recon/port0.control" --json status port0 2>/dev/null |
        grep -A6 '"frontend"' | grep -q '"connected":true'
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

sandbox_install "$BUILD" "$WORK" vhost-recon@.service || fail "$SANDBOX_ERROR"
CTL=$SANDBOX_CTL
mkdir -p "$WORK/units/$U.service.d"
sandbox_port0_config "$WORK"
# The watchdog fires fast; the test hooks (a hang, an abort) are on. Nothing else changes.
printf '[Service]\nWatchdogSec=1s\nEnvironment=VHOST_RECOND_TEST_HOOKS=1\n' > "$WORK/units/$U.service.d/test.conf"
grep -E '^(Restart|RestartSec|FileDescriptorStoreMax|WatchdogSec)=' "$WORK/units/vhost-recon@.service" | tr '\n' ' '; echo

sandbox_start "$WORK" "$NAME" || fail "the sandbox did not start"
ROOT=$(sandbox_root "$WORK")
SOCKDIR=$ROOT/run/vhost-recon

sd systemctl start $U || fail "systemctl start $U"
for _ in $(seq 100); do [ "$(sd systemctl is-active $U)" = active ] && break; sleep 0.05; done
dpdk_start_backend 0
dpdk_start_frontend
fe_pid=$FRONTEND_PID
dpdk_wait_rx_above "$WORK/frontend.log" 100000 30 || fail "no traffic through $U"
echo "ok: testpmd app <-> $U <-> testpmd switch, traffic flowing"

# Traffic goes on: both testpmd counters grow by `by` within `secs`.
traffic_goes_on() {   # what by secs
    local a b
    a=$(dpdk_rx "$WORK/frontend.log"); b=$(dpdk_rx "$WORK/backend.$BE.log")
    dpdk_wait_rx_above "$WORK/frontend.log" $((a + $2)) "$3" || fail "$1: the app's traffic stopped (rx $a)"
    dpdk_wait_rx_above "$WORK/backend.$BE.log" $((b + $2)) "$3" || fail "$1: the switch's traffic stopped (rx $b)"
}
app_never_noticed() {
    kill -0 "$fe_pid" 2>/dev/null || fail "$1: the app died"
    if grep -qiE "link state change|is down" "$WORK/frontend.log"; then fail "$1: the app saw its link change"; fi
}
BE=0
crash() {   # label how...
    local label=$1 before restored t0 t1 pid_before
    shift
    pid_before=$(main_pid)
    restored=$(journal_count "port0: restored from the fd store")
    t0=$(now_ms)
    "$@"
    # While it is down the control socket (in the fd store) accepts and vhostctl waits: it is
    # answered once the new process serves.
    for _ in $(seq 500); do [ "$(main_pid)" != "$pid_before" ] && serving && break; sleep 0.005; done
    t1=$(now_ms)
    serving || fail "$label: the daemon does not serve port0 again"
    wait_journal_count "port0: restored from the fd store" $((restored + 1)) 15 ||
        fail "$label: port0 was not restored from the fd store"
    [ "$(main_pid)" != "$pid_before" ] || fail "$label: the daemon was not restarted"
    traffic_goes_on "$label" 50000 10
    app_never_noticed "$label"
    echo "ok: $label: pid $pid_before -> $(main_pid), serving again after $((t1 - t0)) ms, traffic went on, the app never noticed"
    RESTART_MS="${RESTART_MS:-} $((t1 - t0))"
}
switch_restart() {   # label
    local replays
    replays=$(journal_count "port0: replay done")
    kill -9 "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null
    BE=$((BE + 1))
    dpdk_start_backend $BE
    wait_journal_count "port0: replay done" $((replays + 1)) 30 || fail "$1: the restarted switch got no replay"
    dpdk_wait_rx_above "$WORK/backend.$BE.log" 100000 30 || fail "$1: no traffic after the switch restart"
    traffic_goes_on "$1 + switch restart" 50000 10
    app_never_noticed "$1 + switch restart"
    echo "ok: $1: the switch killed and started again got the device from what survived, traffic resumed"
}

# 1. SIGKILL, $KILLS times, while traffic flows; a short pause between them
sigkill() { sd systemctl kill -s SIGKILL --kill-who=main $U; }
for k in $(seq "$KILLS"); do
    crash "SIGKILL $k/$KILLS" sigkill
    sleep 0.5
done
nrestarts=$(sd systemctl show -p NRestarts --value $U)
[ "$nrestarts" -ge "$KILLS" ] || fail "NRestarts is $nrestarts"
# The restart time, measured without systemctl's own latency: SIGKILL sent from the host to
# the main process (what systemctl kill --kill-who=main does), until vhostctl is answered.
CG="$(sandbox_cgroot)/$NAME/system.slice/system-vhost\x2drecon.slice/$U.service"
for k in $(seq "${MEASURE:-6}"); do
    hostpid=$(head -1 "$CG/cgroup.procs")
    [ -n "$hostpid" ] || fail "no main process in $CG"
    t0=$(now_ms)
    kill -9 "$hostpid"
    for _ in $(seq 1000); do serving && break; sleep 0.002; done
    t1=$(now_ms)
    serving || fail "measure $k: not serving again"
    MEASURED_MS="${MEASURED_MS:-} $((t1 - t0))"
    sleep 0.3
done
traffic_goes_on "after ${MEASURE:-6} more SIGKILLs" 50000 10
app_never_noticed "after ${MEASURE:-6} more SIGKILLs"
echo "ok: ${MEASURE:-6} more SIGKILLs from the host: SIGKILL to serving again (ms, sorted): $(echo $MEASURED_MS | tr ' ' '\n' | sort -n | tr '\n' ' ')"

# 2. the switch restarts afterwards and is replayed from what survived
switch_restart "after $KILLS SIGKILLs"

# 3. the watchdog (a hung loop: systemd sends SIGABRT after WatchdogSec=1s) and an abort
hang() { sd systemctl kill -s SIGUSR1 --kill-who=main $U; }
crash "watchdog (hung event loop)" hang
grep -qi "watchdog timeout" "$WORK/console.log" || { grep -i -B2 -A5 "watchdog\|SIGABRT\|ABRT" "$WORK/console.log" | tail -20; fail "the watchdog did not fire"; }
switch_restart "after the watchdog"
abrt() { sd systemctl kill -s SIGUSR2 --kill-who=main $U; }
crash "abort()" abrt
switch_restart "after the abort"

# 4. systemctl restart and a clean stop as before
crash "systemctl restart" sd systemctl restart $U
sd journalctl --no-pager -u $U | grep -q "kept in the fd store for the next start" || fail "no clean handover"
app_never_noticed "systemctl restart"
n=$(sd systemctl show -p NFileDescriptorStore --value $U)
echo "--- systemctl status $U (fd store: $n fds):"
sd systemctl status --no-pager -n 12 $U | sed 's/^/    /'
sd systemctl stop $U || fail "systemctl stop"
[ "$(sd systemctl show -p NFileDescriptorStore --value $U)" = 0 ] || fail "the fd store was not emptied by a stop"
echo "ok: systemctl stop: the unit stopped, the fd store emptied"
sorted=$(echo $RESTART_MS | tr ' ' '\n' | sort -n | tr '\n' ' ')
echo "restart times (from the systemctl command, which takes its own time under load, to serving again, ms, sorted): $sorted"
echo "$((KILLS + 4)) passed, 0 failed"
