# Sourced by the tests' setup scripts (tests/xapi/setup.sh, tests/deploy/setup.sh): one pinned
# virtualenv under .stack/, created idempotently; concurrent runs wait for each other.
#
#   venv_with DIR "REQUIREMENTS" ["REQUIREMENTS WITHOUT THEIR DEPENDENCIES"]
#
# recreates DIR when what it holds (recorded in DIR/.installed) is not exactly what is asked.
venv_with() {
  local venv="$1" requirements="$2" no_deps="${3:-}"
  local wanted="$requirements${no_deps:+ $no_deps}"
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  flock 9
  if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing $wanted into $venv" >&2
    rm -rf "$venv"
    # Debian's python3 needs python3-venv for a virtualenv (scripts/stack.sh installs it too)
    if ! python3 -m venv "$venv" >&2; then
      rm -rf "$venv"
      local as_root=()
      if [ "$(id -u)" -ne 0 ]; then as_root=(sudo -n); fi
      "${as_root[@]}" flock /tmp/learning-progress-apt.lock apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
      DEBIAN_FRONTEND=noninteractive "${as_root[@]}" flock /tmp/learning-progress-apt.lock apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv >&2
      python3 -m venv "$venv" >&2
    fi
    # shellcheck disable=SC2086 # one word per requirement
    "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements >&2
    if [ -n "$no_deps" ]; then
      # shellcheck disable=SC2086
      "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps $no_deps >&2
    fi
    echo "$wanted" >"$venv/.installed"
  fi
  exec 9>&-
}
