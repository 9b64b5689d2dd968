#!/bin/bash
# A VM started by libvirt, as OpenStack Nova, oVirt or virt-manager start them, behind
# vhost-recond:
#  - a real libvirtd (Debian 12's libvirt 9.0) started by the test in a private mount
#    namespace (its own /run/libvirt and /etc/libvirt, no host systemd), which runs QEMU as
#    libvirt-qemu:kvm from a domain XML with <interface type='vhostuser'> pointing at
#    vhost-recond's front-end socket (the project's TCG guest, direct kernel boot);
#  - vhost-recond under the project's units in a real systemd (PID 1 of private namespaces),
#    as user vhost-recon; OVS with DPDK as the switch, reflecting the guest's packets;
#  - (a) ovs-vswitchd SIGKILLed and restarted; (b) vhost-recond restarted with systemctl
#    restart, and (c) SIGKILLed; (d) the NIC hot-unplugged with virsh detach-interface and
#    plugged again with virsh attach-device. Each time the domain stays running, virsh
#    domifstat's counters rise again, the guest's counters rise, and the guest sees no link
#    change except the unplug itself;
#  - bad input: a port whose socket directory vhost-recond cannot write, a port whose path
#    is another process's live socket (left to it), a port whose policy refuses the uid
#    libvirt runs QEMU as, and a domain whose XML points at a socket no port owns: each a
#    clear error naming the path or uid, the other port goes on.
set -u
BUILD=${1:?usage: $0 BUILD-DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../systemd/sandbox.sh"
. "$HERE/../real/dpdk-lib.sh"
. "$HERE/../real/ovs-lib.sh"

skip() { echo "SKIP: $*"; exit 77; }
why=$(sandbox_check); [ -z "$why" ] || skip "a private systemd cannot run here: $why"
for t in libvirtd virsh qemu-system-x86_64; do
    command -v $t >/dev/null || skip "$t not installed (apt-get install libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86)"
done
id libvirt-qemu >/dev/null 2>&1 || skip "no libvirt-qemu user (apt-get install libvirt-daemon-system)"
why=$(ovs_missing) || skip "$why"
reason=$(dpdk_setup_hugepages) || skip "$reason"
GUEST=$(bash "$HERE/../qemu/make-guest.sh" 2> /tmp/vr-make-guest.log) ||
    skip "cannot build the guest from Debian packages: $(tail -1 /tmp/vr-make-guest.log)"

# Not under /tmp: the units have PrivateTmp=yes. 0755 so that libvirt-qemu and vhost-recon
# can walk into it.
WORK=$(mktemp -d /var/lib/vr-libvirt-XXXXXX)
chmod 0755 "$WORK"
NAME=vr-libvirt-$$
LIBVIRTD_PID=
OTHER_PID=
DOM=vr-guest-$$
cleanup() {
    [ -n "$LIBVIRTD_PID" ] && { virsh destroy "$DOM" >/dev/null 2>&1; kill "$LIBVIRTD_PID" 2>/dev/null; wait "$LIBVIRTD_PID" 2>/dev/null; }
    # this run's QEMU only (its -name is the domain's, unique to this run), if libvirtd went first
    pkill -9 -f -- "-name guest=$DOM," 2>/dev/null
    [ -n "$OTHER_PID" ] && kill "$OTHER_PID" 2>/dev/null
    ovs_cleanup
    sandbox_stop "$WORK" "$NAME"
    [ -n "${KEEP_TEST_LOGS:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() {
    echo "FAIL: $*"
    sandbox_run "$WORK" journalctl --no-pager -n 40 2>/dev/null | tail -40
    for f in "$WORK"/*.log "$WORK"/ovs/ovs-vswitchd.*.log; do [ -f "$f" ] && { echo "--- $f"; grep -vE '^\[ |^RX ' "$f" | tail -15; }; done
    exit 1
}
sd() { sandbox_run "$WORK" "$@"; }
virsh() { command virsh -q -c "qemu:///system?socket=$WORK/libvirt-sock/libvirt-sock" "$@"; }
since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
journal_count() { sd journalctl --no-pager -u "$U" 2>/dev/null | grep -c -- "$1"; }
wait_journal_count() {   # pattern count [timeout s]
    local i
    for i in $(seq $((${3:-10} * 20))); do
        [ "$(journal_count "$1")" -ge "$2" ] && return 0
        sleep 0.05
    done
    return 1
}
guest_rx() { grep -a '^RX ' "$WORK/guest.log" | tail -1 | cut -d' ' -f2; }
# the rx packets libvirt reports for the interface (from OVS, as for any OVS vhost-user port)
domif_rx() { virsh domifstat "$DOM" vhu0 2>/dev/null | awk '$2 == "rx_packets" {print $3}'; }
# the guest's and libvirt's counters both move on by at least N within S seconds
traffic_goes_on() {   # label n s
    local g d i
    g=$(guest_rx); d=$(domif_rx)
    for i in $(seq $(($3 * 10))); do
        [ "$(guest_rx)" -ge $((${g:-0} + $2)) ] && [ "$(domif_rx)" -ge $((${d:-0} + $2)) ] 2>/dev/null && return 0
        sleep 0.1
    done
    fail "$1: traffic does not go on (guest rx ${g:-?} -> $(guest_rx), domifstat rx_packets ${d:-?} -> $(domif_rx))"
}
domain_running() { [ "$(virsh domstate "$DOM")" = running ] || fail "$1: the domain is $(virsh domstate "$DOM")"; }
carrier_changes() { grep -ac '^CARRIER' "$WORK/guest.log"; }

# 1. vhost-recond from the build's install, under its own units, as vhost-recon
sandbox_install "$BUILD" "$WORK" vhost-recon.service || fail "$SANDBOX_ERROR"
mkdir -p "$WORK/units/vhost-recon.service.d"
# the sockets live where libvirt-qemu and OVS reach them: a site's drop-in for such a path
mkdir -p "$WORK/sockets"
mkdir -m 0755 "$WORK/root-only"   # a socket directory of the wrong owner (root)
chown vhost-recon:vhost-recon "$WORK/sockets"
# another process's socket (a libvirt-qemu process on the host, group kvm 0660) where a port's is configured
mkdir -m 0755 "$WORK/other"
chown libvirt-qemu:kvm "$WORK/other"
setpriv --reuid libvirt-qemu --regid kvm --clear-groups /usr/bin/python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o660); s.listen()
print("listening", flush=True)
while True: s.accept()[0].close()' "$WORK/other/taken.sock" > "$WORK/other.log" 2>&1 &
OTHER_PID=$!
for _ in $(seq 50); do grep -q listening "$WORK/other.log" && break; sleep 0.1; done
# the pid that listens on a socket, as the kernel tells a client of it
listener_pid() { python3 -c '
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
print(struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])' "$1" 2>/dev/null; }
[ "$(listener_pid "$WORK/other/taken.sock")" = "$OTHER_PID" ] || fail "the other process does not listen"
printf '[Service]\nReadWritePaths=%s %s %s\n' "$WORK/sockets" "$WORK/root-only" "$WORK/other" > "$WORK/units/vhost-recon.service.d/sockets.conf"
# vhu0: the front-end socket's name is the OVS interface's, which is how libvirt finds the
# OVS port of a vhost-user NIC (for domifstat)
cat > "$WORK/vhost-recon.conf" <<CONF
control = "/run/vhost-recon/control";
ports = (
  { name = "vhu0";
    frontend = { path = "$WORK/sockets/vhu0"; };
    backend  = { path = "$WORK/sockets/vhu0.vswitch.sock"; };
    socket_group = "kvm"; socket_mode = "0660"; },
  { name = "badir";
    frontend = { path = "$WORK/root-only/badir.sock"; };
    backend  = { path = "$WORK/sockets/badir.vswitch.sock"; }; },
  { name = "refuse";
    frontend = { path = "$WORK/sockets/refuse"; };
    backend  = { path = "$WORK/sockets/refuse.vswitch.sock"; };
    socket_group = "kvm"; socket_mode = "0660"; allow_uids = [ 0 ]; },
  { name = "taken";
    frontend = { path = "$WORK/other/taken.sock"; };
    backend  = { path = "$WORK/sockets/taken.vswitch.sock"; }; }
);
CONF
sandbox_start "$WORK" "$NAME" || fail "the sandbox did not start"
U=vhost-recon.service
sd systemctl start $U || fail "systemctl start $U"
wait_journal_count "vhost-recond running" 1 10 || fail "$U did not start"
user=$(sd ps -o user= -p "$(sd systemctl show -p MainPID --value $U)" | tr -d ' ')
[ "$user" = vhost-recon ] || fail "vhost-recond runs as $user"

# bad input: the port whose directory vhost-recond cannot write fails, the others start
line=$(sd journalctl --no-pager -u $U | grep -m1 "cannot listen on $WORK/root-only/badir.sock: its directory is not writable")
[ -n "$line" ] || fail "no clear error for a socket directory vhost-recond cannot write"
echo "ok: bad socket directory: ${line#*]: }"
line=$(sd journalctl --no-pager -u $U | grep -m1 "taken: cannot listen on $WORK/other/taken.sock: a process of uid $(id -u libvirt-qemu) in another PID namespace listens there")
[ -n "$line" ] || fail "no clear error for a path where another process's socket is"
[ "$(listener_pid "$WORK/other/taken.sock")" = "$OTHER_PID" ] || fail "vhost-recond took the other process's socket"
echo "ok: another process's socket: ${line#*]: }; it is still that process's"
wait_journal_count "2 of 4 ports could not start" 1 5 || fail "the other ports did not start"
echo "ok: the other 2 ports started"

# 2. OVS with DPDK, reflecting the guest's packets
mkdir -p "$WORK/ovs"
ovs_setup "$WORK/ovs" > "$WORK/ovs-setup.log" 2>&1 || fail "cannot set up ovsdb-server: $(tail -3 "$WORK/ovs-setup.log")"
ovs_start_vswitchd 0
why=$(ovs_wait_dpdk 60) || fail "ovs-vswitchd: $why"
ovs_vsctl add-br br0 -- set Bridge br0 datapath_type=netdev fail_mode=secure || fail "add-br"
ovs_vsctl add-port br0 vhu0 -- set Interface vhu0 type=dpdkvhostuserclient \
    "options:vhost-server-path=$WORK/sockets/vhu0.vswitch.sock" || fail "add-port"
FLOW="in_port=vhu0,actions=in_port"
ovs_ofctl add-flow br0 "$FLOW" || fail "add-flow"
wait_journal_count "vhu0: back-end ready" 1 30 || fail "OVS did not connect to vhost-recond"

# 3. libvirtd, private: its own /run/libvirt and /etc/libvirt (a copy, with what a container
# lacks switched off), its socket in WORK; QEMU's output to files (no virtlogd needed).
mkdir -p "$WORK/etc" "$WORK/libvirt-sock" "$WORK/guest"
cp -a /etc/libvirt/. "$WORK/etc/"
rm -f "$WORK"/etc/qemu/networks/autostart/*
cat >> "$WORK/etc/qemu.conf" <<QCONF
user = "libvirt-qemu"
group = "kvm"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
QCONF
cat > "$WORK/etc/libvirtd.conf" <<LCONF
unix_sock_dir = "$WORK/libvirt-sock"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
LCONF
cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$WORK/guest/"
chmod 0644 "$WORK"/guest/*
# ovs-vsctl, which libvirtd runs for domifstat, finds the test's OVS through OVS_RUNDIR
( ovs_close_fds
  export OVS_RUNDIR="$WORK/ovs"
  exec unshare --mount --propagation private sh -c "mkdir -p /run/libvirt && mount -t tmpfs tmpfs /run/libvirt &&
      mount --bind '$WORK/etc' /etc/libvirt && exec libvirtd -f /etc/libvirt/libvirtd.conf" ) \
    < /dev/null > "$WORK/libvirtd.log" 2>&1 &
LIBVIRTD_PID=$!
for _ in $(seq 100); do virsh version > /dev/null 2>&1 && break; sleep 0.1; done
virsh version > /dev/null 2>&1 || fail "libvirtd does not answer"
echo "ok: libvirtd $(libvirtd --version | awk '{print $NF}') started (private /run/libvirt and /etc/libvirt)"

MAC=52:54:00:00:00:01
iface_xml() {   # the NIC, as libvirt users write it
    cat <<IFACE
    <interface type='vhostuser'>
      <mac address='$MAC'/>
      <source type='unix' path='$WORK/sockets/$1' mode='client'/>
      <model type='virtio'/>
      <driver queues='2'/>
      <alias name='ua-vhu0'/>
    </interface>
IFACE
}
cat > "$WORK/domain.xml" <<DOMXML
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$DOM</name>
  <memory unit='MiB'>256</memory>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$WORK/guest/vmlinuz</kernel>
    <initrd>$WORK/guest/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet pci=nomsi vr=plug</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='custom'><model>qemu64</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
$(iface_xml vhu0)
    <serial type='file'><source path='$WORK/guest.log'/></serial>
    <console type='file'><source path='$WORK/guest.log'/><target type='serial'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
DOMXML
t0=$(date +%s%N)
virsh create "$WORK/domain.xml" > "$WORK/virsh-create.log" 2>&1 || { cat "$WORK/virsh-create.log"; fail "virsh create"; }
qemu_user=$(ps -o user= -C qemu-system-x86_64 | sort -u | tr '\n' ' ')
for i in $(seq 1200); do [ "$(guest_rx)" -gt 100 ] 2>/dev/null && break; sleep 0.1; done
[ "$(guest_rx)" -gt 100 ] 2>/dev/null || fail "the guest receives nothing through vhost-recond and OVS"
echo "ok: virsh create: QEMU runs as $qemu_user; the guest's pings come back through vhost-recond and OVS after $(since "$t0") s"
traffic_goes_on "start" 20 30
echo "    virsh domifstat $DOM vhu0:"; virsh domifstat "$DOM" vhu0 | sed 's/^/      /'
[ "$(carrier_changes)" = 1 ] || fail "the guest's carrier: $(grep -a '^CARRIER' "$WORK/guest.log" | tr '\n' ' ')"

check_round() {   # label carrier-lines-expected
    domain_running "$1"
    traffic_goes_on "$1" 20 30
    [ "$(carrier_changes)" = "$2" ] || fail "$1: the guest saw its link change: $(grep -a '^CARRIER' "$WORK/guest.log" | tr '\n' ' ')"
    grep -aq "IFACE eth0 removed" "$WORK/guest.log" && [ "$2" = 1 ] && fail "$1: the guest lost its NIC"
    echo "ok: $1: domain running, guest rx $(guest_rx), domifstat rx_packets $(domif_rx) and rising, no link change"
}

# (a) the switch
replays=$(journal_count "vhu0: replay done")
ovs_kill_vswitchd
sleep 1
ovs_start_vswitchd 1
ovs_add_flow_retry br0 "$FLOW" 60 || fail "OVS does not take the flow again"
check_round "(a) ovs-vswitchd SIGKILLed and restarted" 1
wait_journal_count "vhu0: replay done" $((replays + 1)) 5 || fail "(a) traffic without a replay to the restarted OVS?"

# (b), (c) vhost-recond itself
restored=$(journal_count "vhu0: restored from the fd store")
sd systemctl restart $U || fail "systemctl restart"
wait_journal_count "vhu0: restored from the fd store" $((restored + 1)) 15 || fail "(b) not restored from the fd store"
check_round "(b) systemctl restart $U" 1
CG="$(sandbox_cgroot)/$NAME/system.slice/$U"
kill -9 "$(head -1 "$CG/cgroup.procs")"
wait_journal_count "vhu0: restored from the fd store" $((restored + 2)) 15 || fail "(c) not restored after SIGKILL"
check_round "(c) vhost-recond SIGKILLed, restarted by systemd" 1

# (d) hot-unplug and plug
fe=$(journal_count "vhu0: front-end connected")
virsh detach-interface "$DOM" vhostuser --mac "$MAC" > "$WORK/detach.log" 2>&1 || { cat "$WORK/detach.log"; fail "virsh detach-interface"; }
for i in $(seq 300); do grep -aq "IFACE eth0 removed" "$WORK/guest.log" && break; sleep 0.1; done
grep -aq "IFACE eth0 removed" "$WORK/guest.log" || fail "(d) the guest did not see the unplug"
for i in $(seq 100); do sd journalctl --no-pager -u $U | grep -q "vhu0: front-end.*\(gone\|closed\|disconnected\|left\)" && break; sleep 0.1; done
domain_running "(d) unplugged"
iface_xml vhu0 > "$WORK/iface.xml"
virsh attach-device "$DOM" "$WORK/iface.xml" > "$WORK/attach.log" 2>&1 || { cat "$WORK/attach.log"; fail "virsh attach-device"; }
wait_journal_count "vhu0: front-end connected" $((fe + 1)) 30 || fail "(d) the plugged NIC did not reach vhost-recond"
for i in $(seq 600); do [ "$(grep -ac 'IFACE eth0 added' "$WORK/guest.log")" = 2 ] && break; sleep 0.1; done
[ "$(grep -ac 'IFACE eth0 added' "$WORK/guest.log")" = 2 ] || fail "(d) the guest has no NIC after attach-device"
domain_running "(d)"
traffic_goes_on "(d) plugged again" 20 60
[ "$(carrier_changes)" = 2 ] && ! grep -aq '^CARRIER 0' "$WORK/guest.log" ||
    fail "(d) the guest's carrier: $(grep -a '^CARRIER' "$WORK/guest.log" | tr '\n' ' ')"
echo "ok: (d) virsh detach-interface + attach-device: the guest saw the NIC go and come back (its only link change), traffic again, domifstat rx_packets $(domif_rx)"

# bad input: a front-end of a uid the policy refuses (allow_uids = [ 0 ]): the user libvirt
# runs QEMU as, reconnecting at once a thousand times as QEMU's vhost-user client does. (Not
# a hot-plugged NIC: QEMU's device_add waits for the socket with its main loop held, which
# would stop this guest, a QEMU matter.)
setpriv --reuid libvirt-qemu --regid kvm --clear-groups /usr/bin/python3 -c '
import socket, sys
for i in range(1000):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(1); s.close()' "$WORK/sockets/refuse" ||
    fail "a libvirt-qemu client cannot reach the refuse port's socket"
sleep 0.5
lines=$(sd journalctl --no-pager -u $U | grep -c "front-end peer uid $(id -u libvirt-qemu) gid $(id -g libvirt-qemu) refused by allow_uids")
line=$(sd journalctl --no-pager -u $U | grep -m1 "refuse: front-end peer uid $(id -u libvirt-qemu)")
[ -n "$line" ] || fail "no clear error for a refused uid"
[ "$lines" -le 2 ] || fail "1000 refused connections wrote $lines log lines"
echo "ok: refused uid, 1000 connections, $lines log line(s): ${line#*]: }"
domain_running "after a refused front-end"
traffic_goes_on "vhu0 after 1000 refused connections on another port" 20 30
echo "ok: vhu0 goes on"

# bad input: a domain whose NIC points at a socket no port of vhost-recond owns
BAD=vr-bad-$$
sed -e "s#<name>$DOM</name>#<name>$BAD</name>#" -e "s#$WORK/sockets/vhu0'#$WORK/sockets/nosuch'#" \
    -e "s#$WORK/guest.log#$WORK/bad-guest.log#g" "$WORK/domain.xml" > "$WORK/bad-domain.xml"
if virsh create "$WORK/bad-domain.xml" > "$WORK/bad-create.log" 2>&1; then
    virsh destroy "$BAD" > /dev/null 2>&1
    fail "libvirt started a domain whose vhost-user socket does not exist"
fi
grep -q "$WORK/sockets/nosuch" "$WORK/bad-create.log" || fail "the error does not name the socket: $(cat "$WORK/bad-create.log")"
echo "ok: a domain XML pointing at a socket no port owns: virsh create fails: $(grep -m1 -o "Failed to connect to.*" "$WORK/bad-create.log" || head -1 "$WORK/bad-create.log")"
domain_running "after the bad domain"
traffic_goes_on "vhu0 after the bad domain" 20 30
echo "ok: vhu0 goes on"
echo "9 passed, 0 failed"
