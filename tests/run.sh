#!/bin/bash
# Sets up and runs every test of vhost-recon: unit, integration (C peers against a live
# daemon) and real peers (DPDK testpmd, systemd, qemu-storage-daemon, virtiofsd, QEMU with
# a guest), first in a -Werror build, then all again in an AddressSanitizer +
# UndefinedBehaviorSanitizer build; then the libFuzzer targets (clang) for FUZZ_SECONDS
# each (default 20). Outside CI a test that cannot run here (not root, no hugepages) is
# skipped with its reason; under CI=true (root, tests/setup.sh has installed every peer) a
# skip is a failure with its reason: the real peers must run.
set -eu
cd "$(dirname "$0")/.."
bash tests/setup.sh

run_suite() {
    local dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" -Dwerror=true "$@" > /dev/null
    fi
    meson compile -C "$dir" > /dev/null
    meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
}

status=0
run_suite build-test
run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
builds="build-test build-asan"
if command -v clang > /dev/null; then
    if [ ! -f build-fuzz/build.ninja ]; then
        CC=clang meson setup build-fuzz -Dwerror=true -Dfuzz=true -Dfuzz_seconds="${FUZZ_SECONDS:-20}" \
            -Db_sanitize=address,undefined -Db_lundef=false > /dev/null
    fi
    meson compile -C build-fuzz > /dev/null
    meson test -C build-fuzz --suite fuzz --print-errorlogs -v || status=1
    builds="$builds build-fuzz"
else
    echo "fuzzing skipped: no clang"
fi

python3 - $builds <<'PY' || status=1
import json, os, sys
ci = os.environ.get("CI") == "true"
counts = {"passed": 0, "failed": 0, "skipped": 0}
for d in sys.argv[1:]:
    with open(f"{d}/meson-logs/testlog.json") as f:
        for line in f:
            t = json.loads(line)
            r = t["result"]
            key = "passed" if r == "OK" else "skipped" if r == "SKIP" else "failed"
            if r == "SKIP":
                out = (t.get("stdout") or "").strip().splitlines()
                why = out[-1] if out else "(no reason printed)"
                if ci:
                    key = "failed"
                    print(f"FAILED {d}/{t['name']}: skipped under CI, where every peer must run: {why}")
                else:
                    print(f"skipped {d}/{t['name']}: {why}")
            elif key == "failed":
                print(f"FAILED {d}/{t['name']}: {r}")
            counts[key] += 1
print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
sys.exit(1 if counts["failed"] else 0)
PY
exit $status
