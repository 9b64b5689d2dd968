# shellcheck shell=bash
# QEMU launch lines for the tests and benchmarks (source it; bash). One place for what every
# QEMU front-end here needs: TCG, the test guest (make-guest.sh), memfd shared memory (a
# vhost-user back-end must map it), the serial console in a file, a QMP socket, a vhost-user
# virtio-net device, an incoming migration, a vIOMMU.
#
#   qemu_guest [CACHE-DIR]        builds (or finds) the test guest: sets QEMU_GUEST, or
#                                 QEMU_GUEST_ERROR (why not) and returns 1 (not in $(...))
#   qemu_start NAME [OPTION]... [-- QEMU-ARG...]
#                                 starts QEMU in the background, sets QEMU_PID; files in
#                                 $QEMU_DIR (default $WORK): guest-NAME.log (the serial
#                                 console), qemu-NAME.log (QEMU's own output), qmp-NAME.sock
#     --mode MODE                 the guest's vr=MODE (guest-init: net, mig, blk, ...)
#     --append ARGS               more kernel arguments
#     --machine M                 default pc,accel=tcg (q35: q35,accel=tcg)
#     --cpu C                     default $QEMU_CPU (max)
#     --no-qmp                    no QMP socket
#     --incoming URI              the destination of a migration (-incoming URI)
#     --paused                    -S: the vCPU does not run until QMP "cont"
#     --vhost-net SOCKET OPTS     chardev c0 + netdev vhost-user n0 on SOCKET, and
#                                 virtio-net-pci,netdev=n0,vectors=0OPTS (OPTS: ",mac=..."
#                                 or ""; vectors=0: QEMU 7.2 under TCG crashes when the
#                                 guest enables MSI-X on a vhost-user net device)
#     --chardev SOCKET            only the chardev c0 on SOCKET (for a device given after --)
#     --viommu                    intel-iommu with interrupt remapping, device IOTLB and
#                                 caching mode (with --machine q35,accel=tcg,kernel-irqchip=split
#                                 and --append "intel_iommu=on no_timer_check")
#   qemu_qmp SOCKET COMMAND [JSON-ARGUMENTS]   one QMP command, prints its "return"
#   qemu_hmp SOCKET COMMAND-LINE               one human monitor command, prints its text
#   qemu_migrate QMP-SOCKET URI  migrates and waits for the end; prints "TOTAL-MS DOWNTIME-MS"
#   qemu_state QMP-SOCKET        QEMU's view for a failure report: run state, registers
#                                (first lines), local APIC
#   qemu_guest_oops LOG          the guest kernel's BUG/Oops/panic lines (the tests' own
#                                log filters drop kernel lines: these must not be dropped)
#   qemu_wait_line FILE PATTERN SECONDS
#                                waits until FILE (a guest's serial log, a daemon's log) has
#                                a line matching the extended regex PATTERN; 1 after SECONDS
#
# Guest RAM is $QEMU_MEM: 256 MiB + 8 KiB, not 256 MiB, and that is on purpose. QEMU 7.2
# (Debian 12) loses guest writes during a live migration under TCG: when it syncs the dirty
# bitmap of a RAM block whose size is a multiple of 64 pages it takes a fast path that clears
# 64 bits at a time and forgets to reset the vCPU's softmmu TLB, so the vCPU goes on storing
# through TLB entries already marked dirty and those stores never reach the bitmap; the
# destination gets the stale page. Fixed upstream in QEMU 9.0 (03bfc2188f "physmem: Fix
# migration dirty bitmap coherency with TCG memory access"), not in Debian's 7.2. A block
# that is not a multiple of 64 pages (256 KiB) takes the page-by-page path, which resets the
# TLB for every page it clears (cpu_physical_memory_test_and_clear_dirty). (-m is rounded to
# 8 KiB on x86, so the smallest step above 256 MiB is 8 KiB.)

QEMU_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QEMU_MEM=${QEMU_MEM:-262152K}
QEMU_CPU=${QEMU_CPU:-max}

qemu_guest() {   # [cache-dir]
    local err
    err=$(mktemp)
    if QEMU_GUEST=$(bash "$QEMU_LIB_DIR/make-guest.sh" ${1:+"$1"} 2> "$err"); then
        rm -f "$err"; return 0
    fi
    QEMU_GUEST_ERROR="cannot build the guest from Debian packages: $(tail -1 "$err")"
    rm -f "$err"; return 1
}

qemu_start() {   # name [option]... [-- qemu-arg...]
    local name=$1 dir=${QEMU_DIR:-${WORK:?qemu_start: set QEMU_DIR or WORK}}
    local mode="" append="" machine="pc,accel=tcg" cpu=$QEMU_CPU qmp=1 args=()
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --mode) mode=$2; shift 2;;
            --append) append="$append $2"; shift 2;;
            --machine) machine=$2; shift 2;;
            --cpu) cpu=$2; shift 2;;
            --no-qmp) qmp=; shift;;
            --incoming) args+=(-incoming "$2"); shift 2;;
            --paused) args+=(-S); shift;;
            --vhost-net) args+=(-chardev "socket,id=c0,path=$2" -netdev vhost-user,id=n0,chardev=c0
                                -device "virtio-net-pci,netdev=n0,vectors=0$3"); shift 3;;
            --chardev) args+=(-chardev "socket,id=c0,path=$2"); shift 2;;
            --viommu) args+=(-device intel-iommu,intremap=on,device-iotlb=on,caching-mode=on); shift;;
            --) shift; args+=("$@"); break;;
            *) echo "qemu_start: unknown option $1" >&2; return 2;;
        esac
    done
    [ -n "$qmp" ] && args+=(-qmp "unix:$dir/qmp-$name.sock,server=on,wait=off")
    qemu-system-x86_64 -machine "$machine" -cpu "$cpu" -smp 1 -m "$QEMU_MEM" \
        -object memory-backend-memfd,id=mem,size="$QEMU_MEM",share=on -numa node,memdev=mem \
        -kernel "${QEMU_GUEST:?qemu_start: call qemu_guest first}/vmlinuz" -initrd "$QEMU_GUEST/initrd.img" \
        -append "console=ttyS0 quiet${mode:+ vr=$mode}$append" \
        -display none -monitor none -serial "file:$dir/guest-$name.log" \
        "${args[@]}" < /dev/null > "$dir/qemu-$name.log" 2>&1 &
    QEMU_PID=$!
}

qemu_qmp() {   # socket command [json-arguments]
    python3 "$QEMU_LIB_DIR/qmp.py" "$@"
}

qemu_hmp() {   # socket command-line
    qemu_qmp "$1" human-monitor-command "$(python3 -c 'import json,sys; print(json.dumps({"command-line": sys.argv[1]}))' "$2")" |
        python3 -c 'import json,sys; print(json.load(sys.stdin))'
}

qemu_migrate() {   # qmp-socket uri
    qemu_qmp "$1" migrate "{\"uri\": \"$2\"}" > /dev/null || return 1
    local st i
    for i in $(seq 1200); do
        st=$(qemu_qmp "$1" query-migrate) || return 1
        case "$st" in
            *'"status": "completed"'*)
                python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["total-time"], d["downtime"])' "$st"
                return 0;;
            *'"status": "failed"'*|*'"status": "cancelled"'*) echo "$st" >&2; return 1;;
        esac
        sleep 0.1
    done
    return 1
}

qemu_state() {   # qmp-socket
    [ -S "$1" ] || return 0
    echo "--- $1: $(timeout 5 python3 "$QEMU_LIB_DIR/qmp.py" "$1" query-status)"
    local c
    for c in "info registers" "info lapic"; do
        timeout 5 python3 "$QEMU_LIB_DIR/qmp.py" "$1" human-monitor-command "{\"command-line\": \"$c\"}" |
            python3 -c 'import json,sys; print(json.load(sys.stdin))' | grep -E '^(RAX|RIP|EFL|ES |CS )|HLT|ISR|IRR|LVTT|Timer'
    done
}

qemu_wait_line() {   # file pattern seconds
    local i
    for i in $(seq $(($3 * 10))); do grep -aqE "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

qemu_guest_oops() {   # guest-log
    grep -a -A12 -E 'BUG:|Oops|Kernel panic|general protection|RIP:' "$1" 2>/dev/null | head -40
}
