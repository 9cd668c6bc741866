#!/usr/bin/env bash
# Prepares the offline schema checks of tests/deploy/schemas.rs, idempotently: a virtualenv,
# .stack/deploy-venv, created on the first run, with
#   - kubernetes-validate (PyPI, pinned), which ships the Kubernetes JSON schemas of every
#     release it knows, strict variants included;
#   - the compose-spec JSON schema, as docker-compose 1.29.2 ships it
#     (compose/config/compose_spec.json), installed without its dependencies: only the file is
#     read, by jsonschema (pinned, a dependency of kubernetes-validate).
# Concurrent runs wait for each other (tests/venv.sh). Prints the virtualenv's directory.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.stack/deploy-venv"
requirements="kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4"
schema_only="docker-compose==1.29.2"

# shellcheck source=../venv.sh
source "$repo/tests/venv.sh"
venv_with "$venv" "$requirements" "$schema_only"
echo "$venv"
