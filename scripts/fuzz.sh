#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ for FUZZ_SECONDS (default 60) each, printing one line per
# target: target, runs, seconds, crashes. Exits non-zero if any target crashed; the crashing
# inputs are in fuzz/artifacts/<target>/ (replay one with `cargo fuzz run <target> <file>`).
#
#   scripts/fuzz.sh                      # every target, 60 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh api_request token_verify
#
# FUZZ_SANITIZER (default none): the targets fuzz safe Rust, where a panic is the failure;
# `address` also works on a stable toolchain (through RUSTC_BOOTSTRAP) at about twice the
# build time. Installs cargo-fuzz from crates.io if it is missing. See fuzz/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version" >&2
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi
# stable toolchains refuse -Zsanitizer unless told they may
if [[ "$sanitizer" != none ]]; then
  export RUSTC_BOOTSTRAP=1
fi

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build --sanitizer "$sanitizer" >&2

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
# what libFuzzer writes for a failing input (not slow-unit-*, a slow input only)
found() {
  find "fuzz/artifacts/$1" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
    -o -name 'oom-*' \) | wc -l
}
failed=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/artifacts/$target"
  before=$(found "$target")
  started=$SECONDS
  status=0
  # the seeds in fuzz/corpus/<target>/ are read, and what the fuzzer learns is kept beside
  # them (ignored by git), so later runs start from it
  cargo fuzz run --sanitizer "$sanitizer" "$target" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
    >"$logs/$target.log" 2>&1 || status=$?
  elapsed=$((SECONDS - started))
  crashes=$(($(found "$target") - before))
  if [[ $status -ne 0 && $crashes -eq 0 ]]; then
    crashes=1 # failed without writing an input (e.g. did not build): count it
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -n 1)
  printf 'fuzz: %-16s runs=%-10s seconds=%-5s crashes=%s\n' \
    "$target" "${runs:-?}" "$elapsed" "$crashes"
  if [[ $crashes -ne 0 ]]; then
    failed=1
    grep -E "panicked at|SUMMARY|Test unit written" "$logs/$target.log" | head -n 5 >&2 || true
  fi
done
exit "$failed"
