#!/usr/bin/env bash
# Property-based API testing of the live server against its own /openapi.json with schemathesis
# (PyPI, pinned, in a venv under .tools/). Passes only with zero 5xx answers and zero answers
# that break the schema (status, content type, headers, body).
#
#   scripts/schemathesis.sh [MAX_EXAMPLES_PER_OPERATION]    default 25
#   SCHEMATHESIS_JUNIT=FILE keeps the JUnit report.
#
# The server gets a fresh data directory. Calls to /rest/{method} carry a Bearer token of an app
# with every scope, so the methods run for real; the webhook form is called with generated user
# ids and codes, and must answer its auth errors within the schema.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS_VERSION=4.32.5
examples="${1:-25}"

venv=.tools/venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo build --locked --bin imnotify
bin="$PWD/target/debug/imnotify"

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Rate and operating limits would answer 503/429 to a run this fast; they are not what is
# tested here, so they are off where the server has them.
serve_args=()
"$bin" serve --help | grep -q -- '--no-limits' && serve_args+=(--no-limits)
# Start on a free port; the first line of stdout names it.
"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" "${serve_args[@]}" >"$work/out" 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do
  grep -q '^Webhook: ' "$work/out" 2>/dev/null && break
  sleep 0.1
done
base=$(sed -n 's/^imnotify listening on //p' "$work/out")
[ -n "$base" ] || { cat "$work/server.log"; echo "server did not start" >&2; exit 1; }
client_id=$("$bin" --data-dir "$work/data" app add --name Schemathesis --scope im,user --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
token=$("$bin" --data-dir "$work/data" app token --client-id "$client_id" --user-id 1 --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

status=0
"$venv/bin/schemathesis" run "$base/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --header "Authorization: Bearer $token" \
  --max-examples "$examples" \
  --workers 2 \
  --request-timeout 20 \
  --seed 1 \
  --generation-database none \
  --no-color \
  --report junit --report-junit-path "$work/junit.xml" || status=$?
# schemathesis exits non-zero for a failed check and for an error inside the tool alike. One
# tool error is known and not about the API: CPython before 3.11.8 can raise "AST constructor
# recursion depth mismatch" (CPython gh-106905) when Hypothesis parses source to describe a
# lambda. When that is the only problem, the run passes with a warning; any failed check
# (5xx, schema violation) or any other error still fails it.
if [ "$status" != 0 ] && [ -f "$work/junit.xml" ]; then
  python3 - "$work/junit.xml" <<'PY' && status=0
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
failures = [c for c in root.iter("testcase") if c.find("failure") is not None]
errors = [e for c in root.iter("testcase") for e in c.findall("error")]
known = "AST constructor recursion depth mismatch"
unknown = [e for e in errors if known not in (e.get("message", "") + (e.text or ""))]
if failures or unknown or not errors:
    sys.exit(1)
print("schemathesis: WARNING: %d tool error(s) from CPython gh-106905 ignored" % len(errors))
PY
fi
[ -n "${SCHEMATHESIS_JUNIT:-}" ] && cp "$work/junit.xml" "$SCHEMATHESIS_JUNIT"
if grep -q "panicked" "$work/server.log"; then
  grep -m5 "panicked" "$work/server.log" >&2
  status=1
fi
if [ "$status" = 0 ]; then
  echo "schemathesis: 1 passed, 0 failed"
else
  echo "schemathesis: 0 passed, 1 failed"
fi
exit "$status"
