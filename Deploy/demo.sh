#!/usr/bin/env bash
# Sets up and runs the hub with its live demo on this machine:
# installs the Debian packages the build needs (if missing), builds, and starts `hub serve --demo`
# on the embedded broker, which plays simulated executions. Open the printed URL in a browser.
# Usage: bash Deploy/demo.sh [--port N]   (Ctrl-C stops the hub)
set -euo pipefail
cd "$(dirname "$0")/.."
port=8080
[ "${1:-}" = "--port" ] && port=${2:?--port needs a number}

packages=(pkg-config zlib1g-dev libssl-dev libhiredis-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "demo: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v swift >/dev/null || { echo "demo: the Swift toolchain (swift 6) must be on PATH" >&2; exit 1; }

echo "demo: building (the first build takes a few minutes)"
# A debug build: it builds in about half the time of a release one, and the demo's load is small.
swift build --product hub 2>&1 | grep -E "error|Build complete" || true
bin=$(swift build --show-bin-path)/hub
[ -x "$bin" ] || { echo "demo: build failed" >&2; exit 1; }

export HUB_TOKEN_SECRET=${HUB_TOKEN_SECRET:-demo-token-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')}
export HUB_ENGINE_SECRET=${HUB_ENGINE_SECRET:-demo-engine-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')}
echo
echo "  Live demo:        http://127.0.0.1:$port/demo/"
echo "  Play more:        $bin simulate --url http://127.0.0.1:$port --workspace demo --executions 2"
echo "                    (with HUB_ENGINE_SECRET=$HUB_ENGINE_SECRET)"
echo
exec "$bin" serve --host 127.0.0.1 --port "$port" --demo
