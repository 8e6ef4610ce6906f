#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, two at a time,
# from the committed seed corpora (copied: a run never changes fuzz/corpus).
# A crash, a timeout (10 s per input) or an allocation over 2 GiB fails the run;
# libFuzzer leaves the input under fuzz/artifacts/<target>/.
#   fuzz/run.sh 30                 every target, 30 s each (CI)
#   fuzz/run.sh 600 state_index    one target, ten minutes
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -v '^lifeboat-fuzz$')
fi
cargo +nightly fuzz build -O "${targets[@]}" >/dev/null 2>&1 || cargo +nightly fuzz build -O
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
maxlen() { case $1 in disk_image|fat_reconcile|fat_write|superblock|moss_db|elf|state_index|cpio|luks_header|pe_image) echo 400000;; *) echo 65536;; esac; }
run_one() {
  local t=$1 corpus="$work/$1"
  mkdir -p "$corpus" "artifacts/$t"
  cp -r "corpus/$t/." "$corpus/" 2>/dev/null || true
  if cargo +nightly fuzz run -O "$t" "$corpus" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -max_len="$(maxlen "$t")" -print_final_stats=1 > "$work/$t.log" 2>&1; then
    local runs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n1)
    local cov
    cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -n1)
    echo "fuzz $t: ${secs} s, ${runs:-?} runs, ${cov:-cov: ?}, no crash"
  else
    echo "fuzz $t: FAILED"; tail -n 40 "$work/$t.log"; return 1
  fi
}
fail=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run_one "${targets[i]}" & a=$!
  if ((i + 1 < ${#targets[@]})); then run_one "${targets[i+1]}" & b=$!; else b=; fi
  wait $a || fail=1
  if [ -n "$b" ]; then wait "$b" || fail=1; fi
done
exit $fail
