#!/usr/bin/env bash
# Installs everything a fresh Debian bookworm machine needs to build, test and
# boot-test lifeboat. Idempotent: re-running it only checks.
set -euo pipefail
need=(musl-tools qemu-system-x86 ovmf systemd-boot-efi systemd-boot mtools dosfstools
      gdisk e2fsprogs cpio xxhash zstd xz-utils file python3 sqlite3 fdisk kmod systemd gcc libc6-dev dracut
      xfsprogs btrfs-progs acl attr rsync libcap2-bin cryptsetup-bin lvm2 python3-cryptography kbd console-data
      sbsigntool openssl binutils efitools
      man-db lintian debootstrap piuparts
      util-linux)  # script(1) and flock(1): tests/cli.rs gives commands a terminal and holds a lock
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if command -v rustup >/dev/null; then
  rustup target list --installed | grep -q x86_64-unknown-linux-musl \
    || rustup target add x86_64-unknown-linux-musl
  for c in clippy rustfmt; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi
# Fuzzing: the nightly toolchain and cargo-fuzz (test.sh runs every target).
if command -v rustup >/dev/null; then
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked -q
echo "setup: ok"
