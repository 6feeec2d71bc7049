#!/usr/bin/env bash
# Install what code sandboxes need when it is missing: gVisor's runsc, bubblewrap (the weaker
# fallback backend), and the Python 3 with numpy, pandas and matplotlib that sandboxes run
# (Debian packages under /usr, mounted read-only into every sandbox), and BusyBox.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v runsc >/dev/null 2>&1 || missing+=(runsc)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
# BusyBox's ls and stat stand in for coreutils' inside gVisor (see src/warden/sandbox/guest/bin).
[ -x /usr/bin/busybox ] || missing+=(busybox)
if ! /usr/bin/python3 -c 'import numpy, pandas, matplotlib' >/dev/null 2>&1; then
  missing+=(python3 python3-numpy python3-pandas python3-matplotlib)
fi
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "sandboxes need: ${missing[*]} (no apt-get here: install them with your package manager)" >&2
  exit 0
fi
echo "installing for sandboxes: ${missing[*]}…"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
