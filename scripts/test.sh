#!/usr/bin/env bash
# Every test: formatting, clippy, the host-side unit and integration tests (with
# real oracles: sgdisk, fsck.fat, mtools, bootctl, systemd-analyze, cpio, xxhsum),
# and the boot scenarios in QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== static release build"
cargo build --release --target x86_64-unknown-linux-musl -q
echo "== cargo test"
cargo test --workspace -q
echo "== boot scenarios (QEMU)"
python3 qemu/scenarios.py
