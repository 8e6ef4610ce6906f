#!/usr/bin/env bash
# Fetches the boot stack from Debian packages into qemu/cache (kept between runs):
# the cloud kernel (with its modules), the generic kernel and a second generic one
# of another ABI (with their modules), and checks for OVMF firmware and
# systemd-boot. Prints nothing but errors; idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${LIFEBOAT_QEMU_CACHE:-$here/cache}
mkdir -p "$cache"
cd "$cache"
# fetch_package PACKAGE DIR: a kernel package unpacked into DIR with depmod run
# (the package ships no modules.dep).
fetch_package() {
  local pkg=$1 dir=$2
  [ -f "$dir/.done" ] && return 0
  rm -rf "$dir" dl && mkdir -p dl "$dir"
  if ! (cd dl && apt-get download -q "$pkg" >/dev/null 2>&1); then
    apt-get update -q >/dev/null
    (cd dl && apt-get download -q "$pkg" >/dev/null 2>&1) || { echo "fetch: apt-get download $pkg failed" >&2; exit 1; }
  fi
  dpkg-deb -x dl/*.deb "$dir"
  rm -rf dl
  depmod -b "$PWD/$dir" "$(ls "$dir/lib/modules" | head -n1)"
  touch "$dir/.done"
}
# fetch_kernel METAPACKAGE DIR: the kernel package the metapackage depends on.
fetch_kernel() {
  local meta=$1 dir=$2 pkg
  [ -f "$dir/.done" ] && return 0
  resolve() { apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  pkg=$(resolve)
  if [ -z "$pkg" ]; then apt-get update -q >/dev/null; pkg=$(resolve); fi
  [ -n "$pkg" ] || { echo "fetch: cannot resolve $meta (run apt-get update)" >&2; exit 1; }
  fetch_package "$pkg" "$dir"
}
# Debian's cloud kernel (NVMe and ext4 built in) and its generic one (every
# storage and filesystem driver a module).
fetch_kernel linux-image-cloud-amd64 kernel
fetch_kernel linux-image-amd64 generic
# A second generic kernel, of another ABI, pinned: a kernel update for the
# per-kernel rescue initrds (scenario s, tests/kernel_initrds.rs).
fetch_package "${LIFEBOAT_SECOND_KERNEL:-linux-image-6.1.0-56-amd64}" generic2
g2vmlinuz=$(ls generic2/boot/vmlinuz-* | head -n1)
echo "${g2vmlinuz##*/vmlinuz-}" > generic2-kver
gvmlinuz=$(ls generic/boot/vmlinuz-* | head -n1)
echo "${gvmlinuz##*/vmlinuz-}" > generic-kver
vmlinuz=$(ls kernel/boot/vmlinuz-* | head -n1)
kver=${vmlinuz##*/vmlinuz-}
ln -sfn "$PWD/$vmlinuz" vmlinuz
ln -sfn "$PWD/kernel/lib/modules/$kver" modules
echo "$kver" > kver
for f in /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd \
         /usr/lib/systemd/boot/efi/systemd-bootx64.efi; do
  [ -f "$f" ] || { echo "fetch: $f missing (run scripts/setup.sh)" >&2; exit 1; }
done
