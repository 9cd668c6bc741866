#!/usr/bin/env bash
# Prepares the xAPI tests (tests/xapi/), idempotently: Ralph's LRS (`ralph-malph` from PyPI,
# pinned) in its own virtualenv, .stack/ralph-venv, created on the first run. Concurrent runs
# wait for each other. Prints the virtualenv's python.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.stack/ralph-venv"
# ralph-malph's LRS imports `requests` (its OpenID Connect support) without depending on it
requirements="ralph-malph[cli,lrs]==5.1.0 requests==2.32.5"

mkdir -p "$repo/.stack"
exec 9>"$repo/.stack/ralph-venv.lock"
flock 9
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$requirements" ]; then
  echo "xapi setup: installing $requirements into $venv" >&2
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
  echo "$requirements" >"$venv/.installed"
fi
echo "$venv/bin/python"
