#!/bin/bash
# Builds a small Linux guest for the QEMU tests from Debian packages: the Debian kernel and
# an initramfs with busybox, the virtio modules and tests/qemu/guest-init. Cached in
# CACHE_DIR (outside the checkout; nothing of it is committed). Prints the directory.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${1:-/var/cache/vhost-recon-test}
mkdir -p "$CACHE"
stamp=$(cat "$HERE/guest-init" "$HERE/make-guest.sh" "$HERE/guest-udp.c" | sha256sum | cut -c1-16)
cd "$CACHE"

if [ -f "guest-$stamp.initrd" ] && [ -f vmlinuz ]; then
    ln -sf "guest-$stamp.initrd" initrd.img
    echo "$CACHE"; exit 0
fi

fetch() {   # apt-get download, with one apt-get update if the lists are empty or stale
    ( apt-get download "$@" || { apt-get update -qq && apt-get download "$@"; } ) > download.log 2>&1
}
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | grep -o 'linux-image-[0-9][^ ]*' | head -1)
if [ -z "$kpkg" ]; then apt-get update -qq; kpkg=$(apt-cache depends linux-image-amd64 | grep -o 'linux-image-[0-9][^ ]*' | head -1); fi
ls ${kpkg}_*.deb > /dev/null 2>&1 || fetch "$kpkg"
ls busybox-static_*.deb > /dev/null 2>&1 || fetch busybox-static

rm -rf x root && mkdir x root
dpkg-deb -x ${kpkg}_*.deb x
dpkg-deb -x busybox-static_*.deb x
cp x/boot/vmlinuz-* vmlinuz
mkdir -p root/bin root/lib/modules root/proc root/sys root/dev root/tmp root/etc
cp x/bin/busybox root/bin/busybox
# The drivers and what they depend on, in an order insmod can load them (modules.dep is made
# by depmod at install time; the package does not have it).
order=""
add_module() {
    local m=$1 f d
    case " $order " in *" $m "*) return;; esac
    f=$(find x/lib/modules -name "$m.ko*" | head -1)
    [ -n "$f" ] || { echo "module $m not found in $kpkg" >&2; exit 1; }
    case "$f" in
        *.ko.xz) xz -dc "$f" > "root/lib/modules/$m.ko";;
        *.ko.zst) zstd -dqc "$f" > "root/lib/modules/$m.ko";;
        *) cp "$f" "root/lib/modules/$m.ko";;
    esac
    # the .modinfo section's "depends=a,b" (no kmod needed)
    for d in $(grep -a -o 'depends=[a-z0-9_,-]*' "root/lib/modules/$m.ko" | head -1 | sed 's/depends=//' | tr ',' ' '); do
        add_module "$d"
    done
    order="$order $m"
}
for m in virtio_pci virtio_net virtio_blk; do add_module $m; done
echo "$order" > root/lib/modules/order
cp "$HERE/guest-init" root/init
# the migration test's traffic and data check (static: the initramfs has no libc)
${CC:-cc} -static -O2 -Wall -o root/bin/guest-udp "$HERE/guest-udp.c"
chmod +x root/init
( cd root && find . | cpio -o -H newc --quiet | gzip -1 ) > "guest-$stamp.initrd.tmp"
mv "guest-$stamp.initrd.tmp" "guest-$stamp.initrd"
ln -sf "guest-$stamp.initrd" initrd.img
rm -rf x root
echo "$CACHE"
