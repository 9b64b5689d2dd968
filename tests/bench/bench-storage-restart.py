#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Storage back-end restarts under a writing guest: vhost-recond in client mode against QEMU's
own reconnect, interleaved in one run. Not part of `meson test`.

  flock /tmp/vhost-recon-realpeer.lock tests/bench/bench-storage-restart.py BUILD_DIR [ROUNDS] [OUTAGE_S]

Two QEMU 7.2 (TCG) guests run at once, each writing 4 KiB to its vhost-user-blk disk every
~20 ms (tests/qemu/guest-init, vr=blkloop), each disk served by its own qemu-storage-daemon:
  A  QEMU -> vhost-recond (back-end side in client mode, reconnect_ms 100) -> qsd
  B  QEMU (-chardev socket,reconnect=1) -> qsd, no vhost-recond
Round k kills A's qsd with SIGKILL, starts it again OUTAGE_S later, measures, then does the
same to B's: the two are interleaved A B A B under the same load (both guests always write).
Per restart:
  listen:   the new qsd's socket is listening (/proc/net/unix polled every 0.5 ms after spawn)
  connect:  a connection to it is established (the same poll: an accepted socket on its path)
  link up:  A only: vhost-recond's link_up event (vhostctl monitor, CLOCK_MONOTONIC stamp):
            the replay done and a ring running
  stall:    the guest's longest gap between two completed writes around the restart, timed on
            the host as the guest's serial lines arrive
"""
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def mono():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Guest:
    def __init__(self, name, work, guest_dir, chardev_args, device_args):
        self.name = name
        self.lines = []         # (host monotonic time, line)
        self.lock = threading.Lock()
        cmd = ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-cpu", "max", "-smp", "1", "-m", "256",
               "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa", "node,memdev=mem",
               "-kernel", f"{guest_dir}/vmlinuz", "-initrd", f"{guest_dir}/initrd.img",
               "-append", "console=ttyS0 quiet vr=blkloop", "-display", "none", "-monitor", "none",
               "-serial", "stdio", "-chardev", chardev_args] + device_args
        self.log = open(f"{work}/qemu-{name}.log", "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            t = mono()
            with self.lock:
                self.lines.append((t, raw.decode(errors="replace").strip()))

    def writes_since(self, t0):
        with self.lock:
            return [t for t, l in self.lines if t >= t0 and l.startswith("W ")]

    def wait_line(self, prefix, timeout):
        end = mono() + timeout
        while mono() < end:
            with self.lock:
                if any(l.startswith(prefix) for _, l in self.lines):
                    return True
            time.sleep(0.1)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Qsd:
    def __init__(self, name, work, sock):
        self.name, self.work, self.sock = name, work, sock
        self.disk = f"{work}/{name}.img"
        with open(self.disk, "wb") as f:
            f.truncate(64 << 20)
        self.proc = None

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        log = open(f"{self.work}/qsd-{self.name}.log", "a")
        self.proc = subprocess.Popen(
            ["qemu-storage-daemon", "--blockdev", f"driver=file,node-name=disk0,filename={self.disk}",
             "--export", f"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={self.sock},"
             "num-queues=1,writable=on"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def unix_sockets(path):
    """(listening, connected) for sockets bound to path, from /proc/net/unix."""
    listening = connected = False
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == path:
                if int(parts[3], 16) & 0x10000:
                    listening = True
                elif parts[5] == "03":
                    connected = True
    return listening, connected


def watch_socket(path, timeout=10.0):
    """Polls until the path listens and then has a connection: (t_listen, t_connect)."""
    t_listen = t_connect = None
    end = mono() + timeout
    while mono() < end and t_connect is None:
        listening, connected = unix_sockets(path)
        now = mono()
        if listening and t_listen is None:
            t_listen = now
        if connected and t_listen is not None:
            t_connect = now
        time.sleep(0.0005)
    if t_connect is None:
        with open("/proc/net/unix") as f:
            seen = [l.strip() for l in f if l.rstrip().endswith(path)]
        print(f"  (no connection seen on {path}: {seen})", file=sys.stderr)
    return t_listen, t_connect


class Monitor:
    """vhostctl -j monitor: the daemon's events, with their CLOCK_MONOTONIC stamps."""

    def __init__(self, vhostctl, control, work):
        self.events = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([vhostctl, "--socket", control, "-j", "monitor"], stdout=subprocess.PIPE,
                                     stderr=open(f"{work}/monitor.log", "w"))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            with self.lock:
                self.events.append(ev)

    def first(self, kind, after, timeout):
        end = mono() + timeout
        while mono() < end:
            with self.lock:
                for ev in self.events:
                    t = ev.get("monotonic_usec", 0) / 1e6
                    if ev.get("type") == kind and t >= after:
                        return t
            time.sleep(0.01)
        return None

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def stall(guest, t_kill, t_end):
    """The longest gap between completed writes that spans t_kill."""
    ts = guest.writes_since(t_kill - 2.0)
    ts = [t for t in ts if t <= t_end]
    before = [t for t in ts if t <= t_kill]
    after = [t for t in ts if t > t_kill]
    if not before or not after:
        return None
    seq = [before[-1]] + after
    return max(b - a for a, b in zip(seq, seq[1:]))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def fmt(xs, unit_ms=True):
    if not xs:
        return "-"
    k = 1000 if unit_ms else 1
    return f"{pct(xs, 50) * k:8.1f} {max(xs) * k:8.1f}"


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    build = os.path.abspath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    outage = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    daemon_bin, vhostctl = f"{build}/daemon/vhost-recond", f"{build}/daemon/vhostctl"
    for b in ("qemu-system-x86_64", "qemu-storage-daemon"):
        if not shutil.which(b):
            print(f"SKIP: {b} not installed")
            return 77
    cache = os.environ.get("VR_GUEST_CACHE", "/var/cache/vhost-recon-test")
    guest_dir = subprocess.run(["bash", f"{ROOT}/tests/qemu/make-guest.sh", cache], capture_output=True,
                               text=True).stdout.strip()
    if not guest_dir:
        print("SKIP: cannot build the guest (tests/qemu/make-guest.sh)")
        return 77

    work = tempfile.mkdtemp(prefix="vr-bench-storage-")
    procs = []
    try:
        qa, qb = Qsd("a", work, f"{work}/qsd-a.sock"), Qsd("b", work, f"{work}/qsd-b.sock")
        qa.start()
        qb.start()
        for q in (qa, qb):
            end = mono() + 10
            while mono() < end and not unix_sockets(q.sock)[0]:
                time.sleep(0.01)
        with open(f"{work}/recond.conf", "w") as f:
            f.write(f'control = "{work}/control";\nports = ( {{ name = "blk0"; '
                    f'frontend = {{ path = "{work}/blk0.sock"; }};\n'
                    f'  backend = {{ path = "{qa.sock}"; mode = "client"; reconnect_ms = 100; }}; }} );\n')
        dlog = open(f"{work}/daemon.log", "w")
        daemon = subprocess.Popen([daemon_bin, "--config", f"{work}/recond.conf"], stdout=dlog, stderr=dlog)
        procs.append(daemon)
        for _ in range(100):
            if os.path.exists(f"{work}/control"):
                break
            time.sleep(0.05)
        mon = Monitor(vhostctl, f"{work}/control", work)
        ga = Guest("a", work, guest_dir, f"socket,id=c0,path={work}/blk0.sock",
                   ["-device", "vhost-user-blk-pci,chardev=c0,num-queues=1"])
        gb = Guest("b", work, guest_dir, f"socket,id=c0,path={qb.sock},reconnect=1",
                   ["-device", "vhost-user-blk-pci,chardev=c0,num-queues=1"])
        for g in (ga, gb):
            if not g.wait_line("W ", 180):
                print(f"FAIL: guest {g.name} does not write; see {work}")
                return 1
        time.sleep(2)

        res = {"a": [], "b": []}
        for k in range(rounds):
            for name, q, g in (("a", qa, ga), ("b", qb, gb)):
                time.sleep(1.5)         # both guests writing steadily before each restart
                t_kill = mono()
                q.kill()
                time.sleep(outage)
                q.start()
                t_listen, t_conn = watch_socket(q.sock, 10)
                t_up = mon.first("link-up", t_kill, 10) if name == "a" else None
                # the guest's writes go on: wait for a few after the restart
                end = mono() + 15
                while mono() < end and len([t for t in g.writes_since(t_listen or t_kill)]) < 5:
                    time.sleep(0.05)
                t_end = mono()
                s = stall(g, t_kill, t_end)
                def since(t, t0):
                    return None if t is None or t0 is None else t - t0
                r = dict(listen=since(t_listen, t_kill), conn=since(t_conn, t_listen), up=since(t_up, t_listen),
                         stall=s)
                res[name].append(r)

                def ms(x):
                    return "?" if x is None else f"{x * 1000:.1f}"
                print(f"round {k + 1} {name}: listening {ms(r['listen'])} ms after the kill, connected +{ms(r['conn'])} ms"
                      + (f", link up +{ms(r['up'])} ms" if name == "a" else "")
                      + f", guest write stall {ms(s)} ms", flush=True)

        cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                             text=True).stdout.strip()
        print()
        print(f"conditions: {os.cpu_count()} cores ({cpu}), kernel {os.uname().release}, QEMU 7.2 TCG guests "
              f"(1 vCPU, 256 MiB) both running and writing 4 KiB + fsync every ~20 ms, one qemu-storage-daemon "
              f"each; {rounds} restarts each, interleaved A B A B; SIGKILL, {outage:.1f} s down, started again; "
              f"1.5 s between restarts; listen/connect from /proc/net/unix polled every 0.5 ms (so +0.0 is 'seen in the same poll', and a link up "
              f"stamped by the daemon can come out earlier than the poll saw the connection)")
        print(f"{'':44} {'p50 ms':>8} {'max ms':>8}")
        for name, title in (("a", "A vhost-recond client mode (reconnect_ms 100)"),
                            ("b", "B QEMU reconnect=1, no vhost-recond")):
            rs = res[name]
            print(title)
            print(f"  {'listening -> connected':42} {fmt([r['conn'] for r in rs if r['conn'] is not None])}")
            if name == "a":
                print(f"  {'listening -> link up (replay done)':42} {fmt([r['up'] for r in rs if r['up'] is not None])}")
            print(f"  {'guest write stall':42} {fmt([r['stall'] for r in rs if r['stall'] is not None])}")
            print(f"  {'kill -> listening (the outage itself)':42} {fmt([r['listen'] for r in rs if r['listen'] is not None])}")
            missing = sum(1 for r in rs if None in (r["conn"], r["stall"]) or (name == "a" and r["up"] is None))
            if missing:
                print(f"  ({missing} of {len(rs)} restarts had a figure missing)")
        for g in (ga, gb):
            g.stop()
        mon.stop()
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        for q in ("qa", "qb", "ga", "gb"):
            o = locals().get(q)
            if o is not None:
                (o.kill if isinstance(o, Qsd) else o.stop)()
        if not os.environ.get("KEEP_BENCH_LOGS"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}")


if __name__ == "__main__":
    sys.exit(main())
