#!/usr/bin/env bash
# Runs every test of the hub: unit tests (swift test), Autobahn|Testsuite against the echo route, and the
# integration tests (pytest) against real hub processes with real peers.
# Needs the packages `.ci/run` installs; `bash .ci/run` installs them and then runs this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
shared=${HUB_SHARED:-$root/../shared}

echo "== build"
swift build --build-tests 2>&1 | grep -v "^warning: 'main'" | tail -n 5

echo "== unit tests"
swift test --skip-build

echo "== python environment"
venv=$root/.build/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r Tests/integration/requirements.txt

echo "== autobahn testsuite (echo route, permessage-deflate on)"
bash Tests/autobahn/run.sh "$root/.build/debug/hub" "$shared/tools/autobahn"

echo "== integration tests"
HUB_BIN="$root/.build/debug/hub" "$venv/bin/python" -m pytest -q -p no:cacheprovider Tests/integration
