# shellcheck shell=bash
# A real systemd (252) as PID 1 of private pid/mount/cgroup/uts/ipc/net namespaces, for
# testing vhost-recon's units for real: systemctl start, socket activation, notify, the
# watchdog and the fd store. Sourced by the systemd tests.
#
#   sandbox_check             why the sandbox cannot run here (empty when it can)
#   sandbox_start DIR NAME    DIR/units is the unit path; NAME the cgroup made the sandbox's root
#   sandbox_run DIR CMD...    run CMD inside (systemctl, journalctl, ...)
#   sandbox_root DIR          the sandbox's / as the host sees it (its private /run is there)
#   sandbox_stop DIR NAME
#   sandbox_install BUILD DIR UNIT...
#                             meson install BUILD into DIR/root as a user would, create the
#                             vhost-recon system user from its sysusers.d file, and write each
#                             installed UNIT into DIR/units pointing at that install and at the
#                             config DIR/vhost-recon.conf; sets SANDBOX_SBIN (the directory of
#                             the installed vhost-recond), SANDBOX_CTL (the installed vhostctl)
#                             and SANDBOX_UNITS (where the units were installed); or sets
#                             SANDBOX_ERROR (why not) and returns 1 (call it not in $(...))
#   sandbox_port0_config DIR  DIR/vhost-recon.conf: port0, both sockets under /run/vhost-recon

sandbox_cgroot() {
    if [ -d /sys/fs/cgroup/unified ]; then echo /sys/fs/cgroup/unified; else echo /sys/fs/cgroup; fi
}

sandbox_check() {
    [ "$(id -u)" = 0 ] || { echo "needs root"; return; }
    [ -x /lib/systemd/systemd ] || { echo "no /lib/systemd/systemd"; return; }
    for t in unshare nsenter script; do
        command -v $t >/dev/null || { echo "no $t"; return; }
    done
    local cg; cg=$(sandbox_cgroot)
    [ -f "$cg/cgroup.procs" ] && [ -w "$cg" ] || { echo "no writable cgroup2 hierarchy at $cg"; return; }
}

# The few units a systemd needs to come up: stub targets, journald, and a way out.
sandbox_stub_units() {
    local u=$1/units t
    mkdir -p "$u"
    for t in basic sysinit sockets paths timers slices local-fs remote-fs network network-online \
             nss-lookup shutdown umount multi-user; do
        printf '[Unit]\nDescription=stub %s\nDefaultDependencies=no\n' "$t" > "$u/$t.target"
    done
    printf '[Unit]\nDescription=vhost-recon test sandbox\nDefaultDependencies=no\nWants=sockets.target systemd-journald.socket systemd-journald.service\n' > "$u/sdbox.target"
    printf '[Unit]\nDescription=Exit\nDefaultDependencies=no\nRequires=systemd-exit.service\nAfter=systemd-exit.service\nAllowIsolate=yes\n' > "$u/exit.target"
    printf '[Unit]\nDescription=Exit\nDefaultDependencies=no\nSuccessAction=exit-force\n' > "$u/systemd-exit.service"
    printf '[Unit]\nDescription=Journal Socket\nDefaultDependencies=no\nBefore=sockets.target\n[Socket]\nListenDatagram=/run/systemd/journal/socket\nListenStream=/run/systemd/journal/stdout\nPassCredentials=yes\nPassSecurity=yes\nReceiveBuffer=8M\nService=systemd-journald.service\nSocketMode=0666\n' > "$u/systemd-journald.socket"
    printf '[Unit]\nDescription=Journal\nDefaultDependencies=no\nRequires=systemd-journald.socket\nAfter=systemd-journald.socket\n[Service]\nExecStart=/lib/systemd/systemd-journald\nType=notify\nSockets=systemd-journald.socket\nRestart=always\nRuntimeDirectory=systemd/journal\nRuntimeDirectoryPreserve=yes\nStandardOutput=null\nFileDescriptorStoreMax=4224\n' > "$u/systemd-journald.service"
}

sandbox_start() {
    local d=$1 name=$2 cg p st q
    cg=$(sandbox_cgroot)/$name
    sandbox_stub_units "$d"
    cat > "$d/inner.sh" <<'INNER'
#!/bin/sh
# PID 1 of the new pid namespace until systemd replaces it.
set -e
D=$1
mount -t cgroup2 cgroup2 /sys/fs/cgroup
only_me() { while read p; do [ "$p" = 1 ] || return 1; done < /sys/fs/cgroup/cgroup.procs; }
for i in $(seq 100); do only_me && break; sleep 0.05; done
mount -t tmpfs -o mode=755 tmpfs /run
[ -d /var/log/journal ] && mount -t tmpfs tmpfs /var/log/journal
mkdir -p /run/systemd/journald.conf.d
printf '[Journal]\nReadKMsg=no\nForwardToConsole=no\nStorage=volatile\n' > /run/systemd/journald.conf.d/sandbox.conf
T=$(tty) && mount --bind "$T" /dev/console
exec env -i container=vhost-recon-test SYSTEMD_UNIT_PATH=$D/units PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=sdbox.target --log-target=console --log-level=info \
  --log-color=no --show-status=no
INNER
    chmod +x "$d/inner.sh"
    mkdir -p "$cg"
    # "echo 0" moves this subshell itself; writing $$ would move the caller and hand the
    # host's whole cgroup tree to the sandboxed systemd.
    ( echo 0 > "$cg/cgroup.procs" || exit 1
      exec setsid script -qfec "unshare --pid --fork --mount --mount-proc --cgroup --uts --ipc --net $d/inner.sh $d" "$d/console.log"
    ) > "$d/unshare.log" 2>&1 < /dev/null &
    p=
    for _ in $(seq 100); do
        for q in $(cat "$cg/cgroup.procs" 2>/dev/null); do
            case "$(tr '\0' ' ' < /proc/$q/cmdline 2>/dev/null)" in
                "/bin/sh $d/inner.sh"*|/lib/systemd/systemd*) p=$q;;
            esac
        done
        [ -n "$p" ] && break; sleep 0.05
    done
    [ -n "$p" ] || { echo "the sandbox's systemd did not start"; return 1; }
    echo "$p" > "$d/sd.pid"
    grep -q "^0::/$name" /proc/$p/cgroup || { echo "sandbox in the wrong cgroup"; kill -9 "$p"; return 1; }
    # move the host-side helpers out of the sandbox's root cgroup; PID 1 waits for this
    for _ in $(seq 50); do
        [ -z "$(grep -vx "$p" "$cg/cgroup.procs")" ] && break
        for q in $(cat "$cg/cgroup.procs"); do [ "$q" = "$p" ] || echo "$q" > "$(sandbox_cgroot)/cgroup.procs" 2>/dev/null; done
        sleep 0.02
    done
    for _ in $(seq 200); do
        st=$(sandbox_run "$d" systemctl is-system-running 2>/dev/null)
        case "$st" in running|degraded) return 0;; esac
        sleep 0.05
    done
    echo "the sandbox's systemd is '$st'"; return 1
}

sandbox_run() {
    local d=$1; shift
    nsenter -t "$(cat "$d/sd.pid")" -m -p -u -n -i -C "$@"
}

sandbox_root() {
    echo "/proc/$(cat "$1/sd.pid")/root"
}

sandbox_stop() {
    local d=$1 name=$2 p cg
    [ -f "$d/sd.pid" ] || return 0
    p=$(cat "$d/sd.pid"); cg=$(sandbox_cgroot)/$name
    sandbox_run "$d" systemctl exit 0 >/dev/null 2>&1 || kill -s RTMIN+14 "$p" 2>/dev/null
    for _ in $(seq 100); do [ -d /proc/$p ] || break; sleep 0.05; done
    [ -d /proc/$p ] && kill -9 "$p"
    sleep 0.2
    find "$cg" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null
    rmdir "$cg" 2>/dev/null
    rm -f "$d/sd.pid"
    return 0
}

sandbox_install() {   # build dir unit...
    local build=$1 d=$2 u prefix conf
    shift 2
    meson install -C "$build" --destdir "$d/root" --no-rebuild > "$d/install.log" 2>&1 || { SANDBOX_ERROR="meson install failed"; return 1; }
    SANDBOX_UNITS=$(find "$d/root" -name 'vhost-recon@.socket' -printf '%h\n')
    SANDBOX_SBIN=$(find "$d/root" -name vhost-recond -type f -printf '%h\n')
    SANDBOX_CTL=$(find "$d/root" -name vhostctl -type f)
    [ -n "$SANDBOX_UNITS" ] && [ -n "$SANDBOX_SBIN" ] && [ -n "$SANDBOX_CTL" ] || { SANDBOX_ERROR="the install lacks units or binaries"; return 1; }
    # The units run vhost-recond as the vhost-recon system user: create it as the package does.
    systemd-sysusers "$(find "$d/root" -path '*/sysusers.d/vhost-recon.conf')" > /dev/null ||
        { SANDBOX_ERROR="systemd-sysusers could not create the vhost-recon user"; return 1; }
    prefix=$(grep -o '^ExecStart=[^ ]*' "$SANDBOX_UNITS/vhost-recon@.service" | sed 's/ExecStart=//; s|/vhost-recond$||')
    conf=$(grep -o -- '--config [^ ]*' "$SANDBOX_UNITS/vhost-recon@.service" | sed 's/--config //')
    mkdir -p "$d/units"
    for u in "$@"; do
        sed -e "s|$prefix/vhost-recond|$SANDBOX_SBIN/vhost-recond|" -e "s|$conf|$d/vhost-recon.conf|" \
            "$SANDBOX_UNITS/$u" > "$d/units/$u" || { SANDBOX_ERROR="no unit $u in the install"; return 1; }
    done
}

sandbox_port0_config() {   # dir
    cat > "$1/vhost-recon.conf" <<CONF
control = "/run/vhost-recon/control";
ports = ( { name = "port0";
            frontend = { path = "/run/vhost-recon/port0.sock"; };
            backend  = { path = "/run/vhost-recon/port0.vswitch.sock"; }; } );
CONF
}
