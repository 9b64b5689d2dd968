#!/bin/bash
# Installs what vhost-recon needs to build and test (Debian 12 packages) and reserves
# hugepages for the DPDK peers. Safe to run again; installs only what is missing.
set -eu
# dpdk-dev ships dpdk-testpmd; the vhost and virtio-user PMDs are only Recommends of dpdk,
# which --no-install-recommends drops, so they are named here.
packages=(meson ninja-build gcc pkg-config libsystemd-dev libconfig-dev libbpf-dev libjson-c-dev
          dpdk dpdk-dev librte-net-vhost23 librte-net-virtio23 librte-mempool-ring23
          openvswitch-switch-dpdk bpftool scdoc qemu-system-common qemu-system-x86 qemu-utils
          cpio gzip xz-utils zstd busybox-static clang libclang-rt-14-dev python3 strace valgrind
          systemd iproute2 procps socat
          libmicrohttpd-dev prometheus prometheus-node-exporter curl
          debhelper devscripts lintian fakeroot dpkg-dev
          libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
if [ "$(id -u)" = 0 ]; then
    [ "$(cat /proc/sys/vm/nr_hugepages)" -ge 1024 ] || echo 1024 > /proc/sys/vm/nr_hugepages || true
    mkdir -p /dev/hugepages
    mountpoint -q /dev/hugepages || mount -t hugetlbfs none /dev/hugepages || true
fi
