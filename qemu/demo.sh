#!/usr/bin/env bash
# The main job: build lifeboat, compose a disk image with it, boot it in QEMU with
# real OVMF + systemd-boot + a Debian kernel, and show the scenarios users care
# about most: the default boot (a), rolling back from the boot menu (b), and
# recovering a system whose glibc was deleted (d). Prints a readable transcript;
# pass -v to see the whole serial console.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "-v" ] && export LIFEBOAT_QEMU_VERBOSE=1
echo "== building the static lifeboat binaries (host tool; rescue binary for the initrd)"
./scripts/build.sh
file -b target/rescue/x86_64-unknown-linux-musl/release/lifeboat | sed 's/^/   /'
echo "== fetching kernel, OVMF and systemd-boot (Debian packages, cached in qemu/cache)"
./qemu/fetch.sh
echo "== booting"
exec python3 qemu/scenarios.py a b d
