#!/usr/bin/env bash
# Install the headless browser the console's tests drive: Debian's Chromium at /usr/bin/chromium.
# Playwright (a dev dependency) drives it through `executable_path`; its own browser download
# (`playwright install`) is never used.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "the console's browser tests need Chromium at /usr/bin/chromium (no apt-get here: install it with your package manager)" >&2
  exit 0
fi
echo "installing chromium (for the console's browser tests)…"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
