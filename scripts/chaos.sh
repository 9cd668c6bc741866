#!/usr/bin/env bash
# The fault-injection harness (chaos/): `make chaos` runs it.
#
#   MODE=quick (default)  the mixed scenario once, on a debug build: a few minutes
#   MODE=full             every scenario, both fsync settings, on a release build, then the
#                         fuzzers for FUZZ_SECONDS (120) each (scripts/fuzz.sh; 0 skips them):
#                         the published figures
#   CHAOS_ARGS="..."      more arguments for the harness, e.g. --scenario postgres --seconds 30
#
# The harness starts its own PostgreSQL, 3-node NATS cluster, Temporal dev server and service
# processes on free loopback ports; it needs the binaries `make stack` installs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODE="${MODE:-quick}"
case "$MODE" in
  # --tests: the same features as the test build, so after `make test` nothing is rebuilt
  quick) profile=debug; build=(cargo build --workspace --bins --tests) ;;
  full)  profile=release; build=(cargo build --release --workspace --bins) ;;
  *) echo "chaos: MODE must be quick or full, not '$MODE'" >&2; exit 2 ;;
esac

echo "==> ${build[*]}"
"${build[@]}"

# shellcheck disable=SC2086
"${CARGO_TARGET_DIR:-target}/$profile/chaos" --mode "$MODE" \
  --nats-server .stack/venv/bin/nats-server --temporal .stack/venv/bin/temporal ${CHAOS_ARGS:-}

if [ "$MODE" = full ] && [ "${FUZZ_SECONDS:-120}" != 0 ]; then
  FUZZ_SECONDS="${FUZZ_SECONDS:-120}" bash scripts/fuzz.sh
fi
