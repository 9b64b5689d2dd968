#!/usr/bin/env python3
"""Turns the "result key=value ..." lines of vhost-recon-bench into the README's table."""
import sys

rows = []
for line in open(sys.argv[1]):
    if line.startswith("result "):
        rows.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
    elif line.strip():
        print(line.strip())


def get(**want):
    for r in rows:
        if all(r.get(k) == str(v) for k, v in want.items()):
            return r
    return None


def ms(us):
    return f"{int(us) / 1000:.2f} ms"


def verdict(ok):
    return "met" if ok else "**not met**"


print("| measure | vhost-recond | target | |")
print("| --- | --- | --- | --- |")
for qp in (1, 4):
    r = get(bench="replay", queue_pairs=qp)
    if r:
        print(f"| replay, {qp} queue pair(s): back-end connect -> DRIVER_OK, p50 / p99 / max | "
              f"{ms(r['p50_us'])} / {ms(r['p99_us'])} / {ms(r['max_us'])} | | |")
f = get(bench="floor")
if f:
    print(f"| floor: a stand-in sends the whole 1-queue-pair replay the moment it accepts, p50 / p99 / max | "
          f"{ms(f['p50_us'])} / {ms(f['p99_us'])} / {ms(f['max_us'])} | | |")
for n in (64, 256, 1024):
    for h in (0, 2):
        r = get(bench="storm", ports=n, handoff_ms=h)
        if not r:
            continue
        label = "handoff 2 ms" if h else "no handoff"
        up = int(r["all_up_p50_us"])
        target = "within 200 ms" if n == 1024 else ""
        v = verdict(up <= 200000) if n == 1024 else ""
        print(f"| storm of {n} ports ({label}): all up, p50 / max of {r['rounds']} storms | "
              f"{ms(r['all_up_p50_us'])} / {ms(r['all_up_max_us'])} | {target} | {v} |")
        mom = float(r["max_over_mean"])
        print(f"| storm of {n} ports ({label}): each port's wait min / mean / max | "
              f"{ms(r['wait_min_us'])} / {float(r['wait_mean_us']) / 1000:.2f} ms / {ms(r['wait_max_us'])} "
              f"(max = {mom:.2f} x mean) | max at most 3 x mean | {verdict(mom <= 3)} |")
for n in (64, 1024):
    for h in (0, 2):
        r = get(bench="flap", ports=n, handoff_ms=h)
        if not r:
            continue
        label = "handoff 2 ms" if h else "no handoff"
        mm = float(r["min_over_mean"])
        print(f"| flapping {n} ports for {r['seconds']} s ({label}): replays per port min / mean / max | "
              f"{r['per_port_min']} / {r['per_port_mean']} / {r['per_port_max']} (min = {mm:.2f} x mean; "
              f"{r['replays_total']} in all) | min at least 0.8 x mean | {verdict(mm >= 0.8)} |")
        p99 = int(r["list_p99_us"])
        print(f"| flapping {n} ports ({label}): ListPorts, connect -> whole reply, p50 / p99 ({r['list_calls']} calls) | "
              f"{ms(r['list_p50_us'])} / {ms(r['list_p99_us'])} | p99 under 10 ms | {verdict(p99 < 10000)} |")
        if "parse_p50_us" in r:
            print(f"| flapping {n} ports ({label}): then the client's json-c parse of the reply, p50 / p99 | "
                  f"{ms(r['parse_p50_us'])} / {ms(r['parse_p99_us'])} | (client side) | |")
r = get(bench="idle")
if r:
    per = float(r["per_port_with_device_kib"])
    print(f"| RSS per idle port, configured only / with a front-end's device set up ({r['ports']} ports) | "
          f"{r['per_port_configured_kib']} KiB / {r['per_port_with_device_kib']} KiB "
          f"(of which anonymous {r['anon_per_port_with_device_kib']} KiB) | at most 32 KiB | {verdict(per <= 32)} |")
    print(f"| CPU of an idle daemon with {r['ports']} ports over {r['idle_seconds']} s | {r['cpu_ms']} ms, "
          f"{r['wakeups']} wakeups | none | {verdict(float(r['cpu_ms']) == 0)} |")
