#!/usr/bin/env bash
# Autobahn|Testsuite, every case 1.* to 13.*, against the hub's echo route with permessage-deflate enabled.
# Usage: run.sh HUB_BINARY AUTOBAHN_TOOL_DIR [CASES_JSON_ARRAY]
# Exits non-zero when any case is FAILED, WRONG CODE or UNCLEAN (the tool's summary.py decides).
set -euo pipefail
hub=$1
tool=$2
cases=${3:-'["*"]'}
here=$(cd "$(dirname "$0")" && pwd)
install_dir=${AUTOBAHN_HOME:-$HOME/.cache/autobahn}
bash "$tool/install.sh" "$install_dir" >/dev/null

work=$(mktemp -d)
# The hub announces its port on its first line of output; read it rather than guess when it is ready.
exec 3< <(exec "$hub" serve --echo --port 0 --log-level warning 2>"$work/hub.log")
hub_pid=$!
trap 'kill $hub_pid 2>/dev/null || true' EXIT
read -r -t 60 line <&3 || { echo "autobahn: hub did not start"; cat "$work/hub.log"; exit 1; }
port=${line##*:}
python3 - "$here/fuzzingclient.json" "$work/spec.json" "$work/report" "$cases" "$port" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["outdir"] = sys.argv[3]
spec["cases"] = json.loads(sys.argv[4])
spec["servers"][0]["url"] = "ws://127.0.0.1:%s/ws/echo" % sys.argv[5]
json.dump(spec, open(sys.argv[2], "w"))
PY
start=$(date +%s)
(cd "$work" && "$install_dir/wstest" -m fuzzingclient -s spec.json >"$work/wstest.log" 2>&1)
echo "autobahn: suite took $(( $(date +%s) - start )) s"
python3 "$tool/summary.py" "$work/report/index.json"
