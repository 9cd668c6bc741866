#!/usr/bin/env bash
# Prepares the xAPI tests (tests/xapi/), idempotently: Ralph's LRS (`ralph-malph` from PyPI,
# pinned) in its own virtualenv, .stack/ralph-venv, created on the first run. Concurrent runs
# wait for each other. Prints the virtualenv's python.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.stack/ralph-venv"
# ralph-malph's LRS imports `requests` (its OpenID Connect support) without depending on it
requirements="ralph-malph[cli,lrs]==5.1.0 requests==2.32.5"

# shellcheck source=../venv.sh
source "$repo/tests/venv.sh"
venv_with "$venv" "$requirements"
echo "$venv/bin/python"
