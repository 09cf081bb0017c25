#!/usr/bin/env bash
# Runs every test of the hub: unit tests (swift test), a fuzzing smoke run, Autobahn|Testsuite against the echo
# route, the integration tests (pytest) against real hub processes with real peers, and smoke runs of the
# benchmark, the soak and the slow-reader run.
# Needs the packages `.ci/run` installs; `bash .ci/run` installs them and then runs this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
shared=${HUB_SHARED:-$root/../shared}

echo "== build"
mkdir -p .build
swift build --build-tests 2>&1 | tee .build/build.log | tail -n 3
# The project's own code builds without a single warning (dependencies' warnings are not ours to fix).
if grep -E "^$root/(Sources|Tests)/.*: warning:" .build/build.log; then
  echo "build: the warnings above come from the project's own code" >&2
  exit 1
fi

echo "== unit tests"
# Every stage is bounded, so a hang fails the run instead of stalling it.
timeout 900 swift test --skip-build

echo "== fuzz smoke (libFuzzer + AddressSanitizer, 20 s per parser, from the committed corpora)"
timeout 1200 bash Tests/fuzz/run.sh all 20

echo "== python environment"
venv=$root/.build/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r Tests/integration/requirements.txt

echo "== autobahn testsuite (echo route, permessage-deflate on)"
timeout 1800 bash Tests/autobahn/run.sh "$root/.build/debug/hub" "$shared/tools/autobahn"

echo "== integration tests"
HUB_BIN="$root/.build/debug/hub" timeout 2400 "$venv/bin/python" -m pytest -q -p no:cacheprovider --timeout 300 Tests/integration

echo "== stream tests and API fuzzing again, every hub of a test on one real redis-server"
HUB_BIN="$root/.build/debug/hub" timeout 1200 "$venv/bin/python" -m pytest -q -p no:cacheprovider --timeout 300 --broker redis \
  Tests/integration/test_streams.py Tests/integration/test_api_fuzz.py

echo "== benchmark smoke run (release builds; the hub, Nchan and the floor server, small, every message checked)"
timeout 900 swift build -c release --product hub 2>&1 | tail -n 1
timeout 900 swift build -c release --product loadgen 2>&1 | tail -n 1
timeout 900 python3 Tests/bench/bench.py --quick --bin "$root/.build/release"
# The same with the subscribers' readers polling instead of sleeping (--spin), as the README's wake-up figures ran.
timeout 300 python3 Tests/bench/bench.py --quick --bin "$root/.build/release" --only latency,many --servers hub,floor --spin \
  --out "$root/.build/bench/results-spin.json"
timeout 300 python3 Tests/bench/ab.py --a "$root/.build/release" --b "$root/.build/release" --subscribers 100 \
  --rate 2000 --duration 2 --rounds 1 --no-perf
timeout 300 python3 Tests/bench/ab.py --a "$root/.build/release" --b "$root/.build/release" --history --rounds 1

echo "== soak and slow-reader smoke runs (release builds; every connection, event and close code checked)"
timeout 600 python3 Tests/bench/soak.py --bin "$root/.build/release" --connections 2000 --executions 100 --rate 50 \
  --warmup 20 --duration 60 --heartbeat 2 --history 20000
timeout 600 python3 Tests/bench/slow_readers.py --bin "$root/.build/release" --subscribers 1000 --slow 10 --executions 10 \
  --rate 20 --phase 30 --pairs 2 --latency-ratio 2
