#!/usr/bin/env bash
# Run a command with the local stack's environment (.stack/env, written by
# scripts/stack.sh): DATABASE_URL, NATS_URL, TEMPORAL_ADDRESS, NATS_SERVER_BIN,
# TEMPORAL_BIN.
#
#   scripts/with-stack-env.sh cargo test
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
env_file="${STACK_DIR:-$repo/.stack}/env"

[ -f "$env_file" ] || { echo "with-stack-env: $env_file missing; run 'make stack' first" >&2; exit 1; }
[ "$#" -gt 0 ]     || { echo "usage: scripts/with-stack-env.sh CMD [ARGS...]" >&2; exit 2; }

# shellcheck disable=SC1090
. "$env_file"
exec "$@"
