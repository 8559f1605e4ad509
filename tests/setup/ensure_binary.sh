#!/usr/bin/env bash
# Tests scripts/setup's per-binary decisions without installing anything: `sudo_if_needed` is
# replaced by a stub that records what would be installed and "installs" it into a temporary
# directory. A machine that has Chromium but not ChromeDriver must get ChromeDriver.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/setup
source "$root/scripts/setup"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The stub: records the apt-get command and provides the binary the package would.
sudo_if_needed() {
  echo "$*" >>"$tmp/calls"
  case "$*" in
    *" chromium-driver") install -m 755 /dev/null "$tmp/chromedriver" ;;
    *" chromium") install -m 755 /dev/null "$tmp/chromium" ;;
  esac
}

fail() { echo "FAIL: $*" >&2; exit 1; }

# Chromium is there, ChromeDriver is not.
install -m 755 /dev/null "$tmp/chromium"
ensure_binary "$tmp/chromium" chromium >/dev/null
ensure_binary "$tmp/chromedriver" chromium-driver >/dev/null
[ -x "$tmp/chromedriver" ] || fail "chromedriver was not installed"
grep -q "install .* chromium-driver$" "$tmp/calls" || fail "chromium-driver was not asked for"
if grep -q " chromium$" "$tmp/calls"; then fail "chromium was reinstalled although present"; fi

# Both present: nothing is installed.
: >"$tmp/calls"
ensure_binary "$tmp/chromium" chromium >/dev/null
ensure_binary "$tmp/chromedriver" chromium-driver >/dev/null
[ ! -s "$tmp/calls" ] || fail "something was installed although every binary was there"

# A package that does not provide its binary is an error, not a silent skip.
if (ensure_binary "$tmp/never-there" some-package >/dev/null 2>&1); then
  fail "a package that did not provide its binary was accepted"
fi
echo "scripts/setup decides per binary: ok"
