#!/usr/bin/env bash
# Runs the side-by-side benchmarks against the local stack (make bench) and writes
# bench/results/latest.json. BENCH_SCALE=small for a quick look (under 3 minutes),
# full (the default) for the published table, tiny for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk (the HTTP load generator)" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO flock /tmp/learning-progress-apt.lock apt-get -o DPkg::Lock::Timeout=600 install -y wrk >/dev/null 2>&1 || { $SUDO flock /tmp/learning-progress-apt.lock apt-get -o DPkg::Lock::Timeout=600 update >/dev/null && $SUDO flock /tmp/learning-progress-apt.lock apt-get -o DPkg::Lock::Timeout=600 install -y wrk >/dev/null; }
fi

# the same build as `make chaos MODE=full`, so one serves both
cargo build --release --quiet --workspace --bins
# the harness and the API replicas it starts log only what matters; progress goes to stderr
export RUST_LOG="${RUST_LOG:-warn}"
exec "${CARGO_TARGET_DIR:-target}/release/learning-progress-bench" --scale "${BENCH_SCALE:-full}" "$@"
