#!/usr/bin/env bash
# Builds the two static (musl) lifeboat binaries from the one crate:
#   target/x86_64-unknown-linux-musl/release/lifeboat          the host tool, reads
#       moss's SQLite databases (feature moss-import, on by default);
#   target/rescue/x86_64-unknown-linux-musl/release/lifeboat   what PID 1 runs in the
#       initrd (--no-default-features: no SQLite; it reads the index the host wrote).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target x86_64-unknown-linux-musl -q
cargo build --release --target x86_64-unknown-linux-musl --no-default-features --target-dir target/rescue -q
for b in target/x86_64-unknown-linux-musl/release/lifeboat target/rescue/x86_64-unknown-linux-musl/release/lifeboat; do
  printf '   %s bytes  %s\n' "$(stat -c %s "$b")" "$b"
done
