#!/usr/bin/env bash
# Starts the server on an empty data directory as the README says, pastes the curl line it
# prints, and checks the answer is {"result": <int>, "time": {...}}.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${IMNOTIFY_BIN:-target/debug/imnotify}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q '^curl ' "$dir/out" 2>/dev/null && break; sleep 0.1; done
line=$(grep '^curl ' "$dir/out") || { cat "$dir/err"; echo "no curl line printed" >&2; exit 1; }
answer=$(bash -c "$line -s")
echo "$answer" | python3 -c '
import json, sys
a = json.load(sys.stdin)
assert isinstance(a["result"], int) and not isinstance(a["result"], bool), a
for k in ("start", "finish", "duration", "processing", "date_start", "date_finish", "operating_reset_at", "operating"):
    assert k in a["time"], (k, a)
print("readme example: ok", a["result"])
'
