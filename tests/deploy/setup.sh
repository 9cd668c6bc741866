#!/usr/bin/env bash
# Prepares the offline schema checks of tests/deploy/schemas.rs, idempotently: a virtualenv,
# .stack/deploy-venv, created on the first run, with
#   - kubernetes-validate (PyPI, pinned), which ships the Kubernetes JSON schemas of every
#     release it knows, strict variants included;
#   - the compose-spec JSON schema, as docker-compose 1.29.2 ships it
#     (compose/config/compose_spec.json), installed without its dependencies: only the file is
#     read, by jsonschema (pinned, a dependency of kubernetes-validate).
# Concurrent runs wait for each other. Prints the virtualenv's directory.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.stack/deploy-venv"
requirements="kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4"
schema_only="docker-compose==1.29.2"

mkdir -p "$repo/.stack"
exec 9>"$repo/.stack/deploy-venv.lock"
flock 9
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$requirements $schema_only" ]; then
  echo "deploy setup: installing $requirements $schema_only into $venv" >&2
  rm -rf "$venv"
  # Debian's python3 needs python3-venv for a virtualenv (scripts/stack.sh installs it too)
  if ! python3 -m venv "$venv" >&2; then
    rm -rf "$venv"
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo -n); fi
    "${as_root[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq python3-venv >&2
    python3 -m venv "$venv" >&2
  fi
  # shellcheck disable=SC2086 # one word per requirement
  "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps $schema_only >&2
  echo "$requirements $schema_only" >"$venv/.installed"
fi
echo "$venv"
