#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (corpus/TARGET/*): typical, valid inputs that the
fuzzers then mutate. Run again after changing it; the files are committed."""
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
UADDR = 0x7f0000000000

def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def msg(req, payload=b"", flags=1):
    return struct.pack("<III", req, flags, len(payload)) + payload

def u64(v): return struct.pack("<Q", v)
def state(i, n): return struct.pack("<II", i, n)
def addr(i, desc, used, avail, flags=0, log=0): return struct.pack("<IIQQQQ", i, flags, desc, used, avail, log)
def region(gpa, size, ua, off): return struct.pack("<QQQQ", gpa, size, ua, off)

# The DPDK virtio-user setup as the daemon sees it.
dpdk = [
    (3, b""), (16, u64(0x10009)), (13, u64(0)), (13, u64(1)), (2, u64(0x950008000)),
    (39, u64(0xb)), (5, struct.pack("<II", 1, 0) + region(0, 0x40000, UADDR, 0)),
]
for i in range(2):
    base = UADDR + 0x10000 * (i + 1)
    dpdk += [(8, state(i, 256)), (10, state(i, 0)), (9, addr(i, base, base + 0x8000, base + 0x1000)),
             (12, u64(i))]
dpdk += [(18, state(0, 1)), (18, state(1, 1)), (39, u64(0xf)), (11, state(0, 0)), (40, b"")]

put("fuzz-message", "dpdk-setup", b"".join(msg(r, p) for r, p in dpdk))
put("fuzz-message", "reply", msg(1, u64(0x150000000), flags=5))

def record(req, payload, need_reply=False):
    return struct.pack("<BBH", req, 1 if need_reply else 0, len(payload)) + payload

put("fuzz-shadow", "dpdk-setup", b"".join(record(r, p) for r, p in dpdk))
slots = [(16, u64(0x18009)), (2, u64(0x100000000)), (36, b""),
         (37, u64(0) + region(0, 0x20000, UADDR, 0)), (37, u64(0) + region(0x20000, 0x20000, UADDR + 0x20000, 0x20000)),
         (38, u64(0) + region(0x20000, 0x20000, UADDR + 0x20000, 0x20000)),
         (32, struct.pack("<QQHHI", 0x1000, 0, 2, 256, 0)), (8, state(0, 128)),
         (9, addr(0, UADDR + 0x1000, UADDR + 0x3000, UADDR + 0x2000)), (12, u64(0)), (34, b"")]
put("fuzz-shadow", "slots-inflight-reset", b"".join(record(r, p, True) for r, p in slots))
packed = [(16, u64(0x10009)), (2, u64(0x500000000)), (5, struct.pack("<II", 1, 0) + region(0, 0x40000, UADDR, 0)),
          (8, state(0, 100)), (10, state(0, 0x8000)), (9, addr(0, UADDR + 0x1000, UADDR + 0x3000, UADDR + 0x2000)),
          (12, u64(0)), (11, state(0, 0))]
put("fuzz-shadow", "packed", b"".join(record(r, p) for r, p in packed))
# A live migration as QEMU 7.2 drives it: LOG_SHMFD, the log (SET_LOG_BASE: size, offset; SET_LOG_FD),
# LOG_ALL on, the rings' used rings logged (VHOST_VRING_F_LOG, log_guest_addr), the rings
# stopped at the end, logging off.
LOG_ALL = 1 << 26
migration = [(3, b""), (16, u64(0x1000b)), (2, u64(0x950008000)),
             (5, struct.pack("<II", 1, 0) + region(0, 0x40000, UADDR, 0))]
for i in range(2):
    base = UADDR + 0x10000 * (i + 1)
    migration += [(8, state(i, 256)), (10, state(i, 0)), (9, addr(i, base, base + 0x8000, base + 0x1000)), (12, u64(i))]
migration += [(6, struct.pack("<QQ", 0x1000, 0)), (7, b""), (2, u64(0x950008000 | LOG_ALL))]
for i in range(2):
    base = UADDR + 0x10000 * (i + 1)
    migration += [(9, addr(i, base, base + 0x8000, base + 0x1000, flags=1, log=0x10000 * (i + 1) + 0x8000))]
migration += [(6, struct.pack("<QQ", 0x2000, 0)), (11, state(0, 0)), (11, state(1, 0)),
              (2, u64(0x950008000))]
for i in range(2):
    base = UADDR + 0x10000 * (i + 1)
    migration += [(9, addr(i, base, base + 0x8000, base + 0x1000))]
put("fuzz-shadow", "migration", b"".join(record(r, p, True) for r, p in migration))
put("fuzz-message", "migration", b"".join(msg(r, p) for r, p in migration) + msg(6, b"", flags=5))

# QEMU with an intel-iommu: ACCESS_PLATFORM acked, rings at IOVAs, the IOTLB updates that map
# them (after SET_VRING_ADDR, as QEMU sends them), then what a hostile front-end might send:
# overlaps, a hole punched in an entry, a wrap-around, an entry outside memory, a MISS.
def iotlb(iova, size, ua, perm, typ): return struct.pack("<QQQBB6x", iova, size, ua, perm, typ)
IOVA = 0xfffe0000
viommu = [(3, b""), (16, u64(0x10029)), (2, u64(0xb50008000)),
          (5, struct.pack("<II", 1, 0) + region(0, 0x40000, UADDR, 0))]
for i in range(2):
    iova = IOVA + 0x4000 * i
    viommu += [(8, state(i, 256)), (10, state(i, 0)), (9, addr(i, iova, iova + 0x3000, iova + 0x1000)),
               (13, u64(i)), (12, u64(i))]
viommu += [(22, iotlb(IOVA + 0x4000 * i, 0x4000, UADDR + 0x10000 * (i + 1), 3, 2)) for i in range(2)]
viommu += [(18, state(0, 1)), (18, state(1, 1)), (39, u64(0xf)),
           (22, iotlb(0x100000, 0x10000, UADDR + 0x20000, 1, 2)),      # data buffers
           (22, iotlb(0x104000, 0x1000, UADDR + 0x30000, 2, 2)),       # overlaps the last one
           (22, iotlb(0x108000, 0x1000, 0, 0, 3)),                     # a hole in it
           (22, iotlb(0xfffffffffffff000, 0x2000, UADDR, 3, 2)),       # wraps: refused
           (22, iotlb(0x200000, 0x1000, UADDR + 0x3ff000 , 3, 2)),     # outside memory: not kept
           (22, iotlb(IOVA, 0x1000, 0, 3, 1)),                         # a MISS: refused
           (11, state(1, 0)), (22, iotlb(IOVA + 0x4000, 0x4000, 0, 0, 3)), (11, state(0, 0))]
put("fuzz-shadow", "viommu", b"".join(record(r, p, True) for r, p in viommu))
put("fuzz-message", "iotlb", b"".join(msg(22, iotlb(IOVA, 0x1000, UADDR, 3, t)) for t in (2, 3)) +
    msg(1, iotlb(IOVA, 0, 0, 1, 1), flags=1))

with open(os.path.join(HERE, "..", "..", "conf", "vhost-recon.conf"), "rb") as f:
    put("fuzz-config", "example", f.read())
put("fuzz-config", "client", b'control = "/run/c"; reply_timeout_ms = 100; control_mode = "0600";\n'
    b'ports = ( { name = "b"; frontend = { path = "/run/a.sock"; };\n'
    b'  backend = { path = "/run/q.sock"; mode = "client"; reconnect_ms = 50; };\n'
    b'  allow_uids = [ 0, 107 ]; features = 0x140000000L; } );\n')

put("fuzz-varlink", "calls", b'{"method":"org.varlink.service.GetInfo"}\0'
    b'{"method":"io.vhostrecon.GetPort","parameters":{"name":"port0"}}\0'
    b'{"method":"io.vhostrecon.Monitor","more":true}\0')
put("fuzz-varlink", "replies", b'{"parameters":{"ports":[]}}\0{"error":"io.vhostrecon.NoSuchPort","parameters":{"name":"x"}}\0')
