#!/usr/bin/env bash
# Every test: formatting, clippy, the host-side unit and integration tests (with
# real oracles: sgdisk, fsck.fat, mtools, bootctl, systemd-analyze, cpio, xxhsum,
# the real moss), the Debian package (lintian, installed into and purged from a
# clean bookworm chroot), 30 s of every fuzz target, and the boot scenarios in QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."
# Nothing may appear or change outside the scratch directories while the tests
# run (scripts/outside_check.sh says what is looked at); checked at the end, also
# when a test failed.
outside=$(mktemp -d)
./scripts/outside_check.sh snapshot "$outside"
finish() {
    status=$?
    echo "== outside the scratch directories"
    ./scripts/outside_check.sh compare "$outside" || status=1
    rm -rf "$outside"
    exit "$status"
}
trap finish EXIT
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
cargo clippy --workspace --all-targets --no-default-features -q -- -D warnings
echo "== static release builds (host tool, rescue binary)"
./scripts/build.sh
echo "== kernels, firmware and loader (qemu/fetch.sh: tests/kernel_initrds.rs boots nothing but uses its kernels)"
./qemu/fetch.sh
echo "== cargo test"
cargo test --workspace -q
echo "== install layout and Debian package (scripts/test_package.sh: lintian, man -l, a bookworm chroot)"
./scripts/test_package.sh
echo "== fuzzing (every target, 30 s each)"
./fuzz/run.sh 30
echo "== boot scenarios (QEMU)"
python3 qemu/scenarios.py
