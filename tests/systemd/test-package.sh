#!/bin/bash
# The Debian package, as an operator would use it:
#  - dpkg-buildpackage -b -us -uc builds vhost-recon_*.deb from the tree; lintian reports
#    no error and no warning;
#  - apt-get install ./vhost-recon_*.deb creates the vhost-recon user and enables no unit;
#  - in a real systemd (PID 1 of private namespaces) with the package's own units and its
#    own /etc/vhost-recon.conf: systemctl start vhost-recon@port0 runs vhost-recond as
#    vhost-recon with no capability, its sockets are group kvm 0660; DPDK testpmd on both
#    sides; vhost-recond SIGKILLed (systemd restarts it from the fd store), restarted with
#    systemctl restart, and the switch restarted: traffic goes on, the app never sees a
#    link change;
#  - apt-get purge leaves no file behind.
# Installs and purges the package on this machine (root only; the CI machine is fresh).
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$SRC/tests/systemd
. "$HERE/sandbox.sh"
. "$SRC/tests/real/dpdk-lib.sh"

why=$(sandbox_check)
[ -z "$why" ] || { echo "SKIP: a private systemd cannot run here: $why"; exit 77; }
for t in dpkg-buildpackage lintian dh; do
    command -v $t >/dev/null || { echo "SKIP: $t not installed (bash tests/setup.sh)"; exit 77; }
done
command -v dpdk-testpmd >/dev/null || { echo "SKIP: dpdk-testpmd not installed"; exit 77; }
reason=$(dpdk_setup_hugepages) || { echo "SKIP: $reason"; exit 77; }
if dpkg-query -W -f='${Status}' vhost-recon 2>/dev/null | grep -q installed; then
    echo "SKIP: vhost-recon is installed on this machine already; this test installs and purges it"
    exit 77
fi

WORK=$(mktemp -d /var/lib/vr-package-XXXXXX)
chmod 0755 "$WORK"
NAME=vr-pkg-$$
cleanup() {
    dpdk_cleanup
    sandbox_stop "$WORK" "$NAME"
    dpkg-query -W vhost-recon >/dev/null 2>&1 && apt-get purge -y -qq vhost-recon >/dev/null 2>&1
    [ -n "${KEEP_TEST_LOGS:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    sandbox_run "$WORK" journalctl --no-pager -n 60 2>/dev/null | tail -60
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done
    exit 1
}
sd() { sandbox_run "$WORK" "$@"; }
U=vhost-recon@port0
main_pid() { sd systemctl show -p MainPID --value $U; }
journal_count() { sd journalctl --no-pager -u $U 2>/dev/null | grep -c -- "$1"; }
wait_journal_count() {   # pattern count [timeout s]
    local i
    for i in $(seq $((${3:-10} * 20))); do
        [ "$(journal_count "$1")" -ge "$2" ] && return 0
        sleep 0.05
    done
    return 1
}
wait_active() {
    local i
    for i in $(seq 100); do [ "$(sd systemctl is-active "$1")" = active ] && return 0; sleep 0.05; done
    return 1
}
files_now() {   # every file of the system a package could leave behind (not the test's DPDK peers' /run/dpdk)
    find /etc /usr /lib /var/lib /run -xdev \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path "$WORK" -o -path /run/dpdk \
        -o -path /var/lib/systemd/deb-systemd-helper-enabled -o -path '/var/lib/vr-*' -o -path /usr/share/man -o -path /var/cache \) -prune \
        -o -print 2>/dev/null | sort
}

# 1. build, as the Debian tools do, from a copy of the tree (the build writes beside it)
mkdir -p "$WORK/src"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$SRC" ls-files -co --exclude-standard | grep -v '^build' | tar -C "$SRC" -cf - -T - | tar -C "$WORK/src" -xf -
else
    tar -C "$SRC" --exclude='./build*' -cf - . | tar -C "$WORK/src" -xf -
fi
( cd "$WORK/src" && dpkg-buildpackage -b -us -uc ) > "$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; fail "dpkg-buildpackage"; }
DEB=$(ls "$WORK"/vhost-recon_*_*.deb)
[ -f "$DEB" ] || fail "no vhost-recon_*.deb was built"
echo "ok: dpkg-buildpackage -b -us -uc built $(basename "$DEB")"
lintian --allow-root --fail-on error,warning --display-info "$WORK"/vhost-recon_*.changes > "$WORK/lintian.log" 2>&1 ||
    { cat "$WORK/lintian.log"; fail "lintian reports errors or warnings"; }
echo "ok: lintian: $(grep -c '^[EW]:' "$WORK/lintian.log") errors or warnings; $(grep -c '^[IP]:' "$WORK/lintian.log") info tags:"
sed 's/^/    /' "$WORK/lintian.log"

# 2. install
files_now > "$WORK/files.before"
apt-get install -y -qq --no-install-recommends "$DEB" > "$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; fail "apt-get install"; }
id vhost-recon > /dev/null 2>&1 || fail "the package created no vhost-recon user"
id -nG vhost-recon | grep -qw kvm || fail "vhost-recon is not in group kvm: $(id vhost-recon)"
[ "$(stat -c %U /run/vhost-recon)" = vhost-recon ] || fail "/run/vhost-recon belongs to $(stat -c %U /run/vhost-recon)"
enabled=$(find /etc/systemd/system -name 'vhost-recon*' 2>/dev/null)
[ -z "$enabled" ] || fail "the package enabled units: $enabled"
dpkg-query -W -f='${Conffiles}\n' vhost-recon | grep -q /etc/vhost-recon.conf || fail "/etc/vhost-recon.conf is not a conffile"
echo "ok: apt-get install: user $(id vhost-recon), /run/vhost-recon, /etc/vhost-recon.conf a conffile, no unit enabled"

# 3. the package's own units, unchanged, in a real systemd
mkdir -p "$WORK/units"
cp /lib/systemd/system/vhost-recon.service /lib/systemd/system/vhost-recon@.service /lib/systemd/system/vhost-recon@.socket "$WORK/units/"
# every service the package ships, rated as installed: at most 1.5 (the issue's bar)
services=$(dpkg -L vhost-recon | grep '/systemd/system/.*\.service$')
[ -n "$services" ] || fail "the package ships no service unit"
for u in $services; do
    rating=$(systemd-analyze security --offline=true "$u" 2>/dev/null | tail -1)
    level=$(echo "$rating" | grep -o '[0-9]*\.[0-9]' | tail -1)
    [ -n "$level" ] || fail "systemd-analyze security rates nothing for $u: $rating"
    awk -v l="$level" 'BEGIN { exit !(l <= 1.5) }' || fail "$rating (more than 1.5)"
    echo "ok: $(basename "$u"): systemd-analyze security $level (at most 1.5)"
done
sandbox_start "$WORK" "$NAME" || fail "the sandbox did not start"
ROOT=$(sandbox_root "$WORK")
sd systemctl start $U || fail "systemctl start $U"
wait_active $U || fail "$U is not active"
pid=$(main_pid)
user=$(sd ps -o user= -p "$pid" | tr -d ' ')
[ "$user" = vhost-recon ] || fail "vhost-recond runs as '$user'"
caps=$(sd awk '/^CapEff/ {print $2}' "/proc/$pid/status")
[ "$caps" = 0000000000000000 ] || fail "vhost-recond has capabilities $caps"
sock=$(stat -c '%U:%G %a' "$ROOT/run/vhost-recon/port0.sock")
[ "$sock" = "vhost-recon:kvm 660" ] || fail "port0.sock is $sock, not vhost-recon:kvm 660"
echo "ok: systemctl start $U: ps -o user= says $user, CapEff $caps, port0.sock $sock"

SOCKDIR=$ROOT/run/vhost-recon
dpdk_start_backend 0
dpdk_start_frontend
fe_pid=$FRONTEND_PID
dpdk_wait_rx_above "$WORK/frontend.log" 100000 30 || fail "no traffic through $U"
CG="$(sandbox_cgroot)/$NAME/system.slice/system-vhost\x2drecon.slice/$U.service"
for i in 1 2; do
    restored=$(journal_count "port0: restored from the fd store")
    host_pid=$(head -1 "$CG/cgroup.procs")
    kill -9 "$host_pid"
    wait_journal_count "port0: restored from the fd store" $((restored + 1)) 15 || fail "SIGKILL $i: port0 not restored"
    before=$(dpdk_rx "$WORK/frontend.log")
    dpdk_wait_rx_above "$WORK/frontend.log" $((before + 50000)) 20 || fail "SIGKILL $i: traffic stopped"
done
# and a clean restart, as an upgrade or an operator does it
restored=$(journal_count "port0: restored from the fd store")
pid_before=$(main_pid)
sd systemctl restart $U || fail "systemctl restart $U"
wait_journal_count "port0: restored from the fd store" $((restored + 1)) 15 || fail "systemctl restart: port0 not restored"
[ "$(main_pid)" != "$pid_before" ] || fail "systemctl restart did not restart vhost-recond"
before=$(dpdk_rx "$WORK/frontend.log")
dpdk_wait_rx_above "$WORK/frontend.log" $((before + 50000)) 20 || fail "systemctl restart: traffic stopped"
[ "$(sd ps -o user= -p "$(main_pid)" | tr -d ' ')" = vhost-recon ] || fail "the restarted daemon is not vhost-recon"
replays=$(journal_count "port0: replay done")
kill -9 "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null
dpdk_start_backend 1
wait_journal_count "port0: replay done" $((replays + 1)) 30 || fail "the restarted switch got no replay"
before=$(dpdk_rx "$WORK/frontend.log")
dpdk_wait_rx_above "$WORK/frontend.log" $((before + 100000)) 30 || fail "no traffic after the switch restart"
kill -0 "$fe_pid" || fail "the app died"
if grep -qiE "link state change|is down" "$WORK/frontend.log"; then fail "the app saw a link change"; fi
echo "ok: 2 SIGKILLs of vhost-recond (restarted by systemd as vhost-recon), a systemctl restart and a switch restart: traffic went on, the app never saw a link change"
dpdk_cleanup; FRONTEND_PID= BACKEND_PID=
sd systemctl stop $U
sandbox_stop "$WORK" "$NAME"

# 4. purge
apt-get purge -y -qq vhost-recon > "$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; fail "apt-get purge"; }
files_now > "$WORK/files.after"
left=$(comm -13 "$WORK/files.before" "$WORK/files.after")
[ -z "$left" ] || fail "apt-get purge left: $left"
[ ! -e /etc/vhost-recon.conf ] || fail "/etc/vhost-recon.conf is still there"
echo "ok: apt-get purge: no file left (the vhost-recon user stays, as Debian does for system users)"
echo "$((4 + $(echo "$services" | wc -w))) passed, 0 failed"
