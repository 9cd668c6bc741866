#!/usr/bin/env bash
# Prepares the browser test (tests/browser.rs), idempotently: Debian's chromium and Node.js from
# apt when missing, playwright-core from the npm registry (package-lock.json) when not installed
# at the locked version. No browser is ever downloaded: the test drives Debian's chromium.
# Prints the chromium binary's path; exits 3 if chromium cannot be installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null || return 1
  if [ "$apt_updated" -eq 0 ]; then
    as_root flock /tmp/learning-progress-apt.lock apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root flock /tmp/learning-progress-apt.lock apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >&2
}

if ! command -v chromium >/dev/null; then
  echo "browser setup: installing Debian's chromium" >&2
  apt_install chromium || { echo "browser setup: chromium could not be installed" >&2; exit 3; }
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser setup: installing Node.js" >&2
  apt_install nodejs npm
fi
if ! cmp -s package-lock.json node_modules/.installed-lock 2>/dev/null; then
  echo "browser setup: npm ci" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json node_modules/.installed-lock
fi
command -v chromium
