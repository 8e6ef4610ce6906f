#!/usr/bin/env bash
# Fetches the boot stack from Debian packages into qemu/cache (kept between runs):
# the cloud kernel (with its modules), OVMF firmware, systemd-boot, and a glibc for
# the test userspace. Prints nothing but errors; idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${LIFEBOAT_QEMU_CACHE:-$here/cache}
mkdir -p "$cache"
cd "$cache"
if [ ! -f kernel/.done ]; then
  resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  pkg=$(resolve)
  if [ -z "$pkg" ]; then apt-get update -q >/dev/null; pkg=$(resolve); fi
  [ -n "$pkg" ] || { echo "fetch: cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
  rm -rf kernel dl && mkdir -p dl kernel
  (cd dl && apt-get download -q "$pkg" >/dev/null 2>&1) || { echo "fetch: apt-get download $pkg failed" >&2; exit 1; }
  dpkg-deb -x dl/*.deb kernel
  rm -rf dl
  kv=$(ls kernel/lib/modules | head -n1)
  # The package ships no modules.dep (depmod runs at install time).
  depmod -b "$PWD/kernel" "$kv"
  touch kernel/.done
fi
# Debian's generic kernel: every storage and filesystem driver is a module.
if [ ! -f generic/.done ]; then
  gresolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  gpkg=$(gresolve)
  if [ -z "$gpkg" ]; then apt-get update -q >/dev/null; gpkg=$(gresolve); fi
  [ -n "$gpkg" ] || { echo "fetch: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
  rm -rf generic gdl && mkdir -p gdl generic
  (cd gdl && apt-get download -q "$gpkg" >/dev/null 2>&1) || { echo "fetch: apt-get download $gpkg failed" >&2; exit 1; }
  dpkg-deb -x gdl/*.deb generic
  rm -rf gdl
  gkv=$(ls generic/lib/modules | head -n1)
  depmod -b "$PWD/generic" "$gkv"
  touch generic/.done
fi
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
