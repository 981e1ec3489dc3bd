#!/usr/bin/env bash
# The interop suite's one entry point: installs the pinned real Bitrix24 clients (only when the
# pins changed), then lets harness.py start imnotify servers, run every client against them,
# check the database, print a PASS/FAIL summary and stop the servers.
#
#   tests/interop/run.sh                 # every client
#   tests/interop/run.sh curl b24jssdk   # only these clients
#   tests/interop/run.sh --capture       # also record each client's requests (wire formats)
#   IMNOTIFY_TEST_PG=$(scripts/pg.sh url) tests/interop/run.sh   # every server on PostgreSQL
#
# The server binary is target/debug/imnotify (build it first: cargo build), or $IMNOTIFY_BIN.
# Expected failures are listed in xfail.txt (or $INTEROP_XFAIL); see README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
deps="$here/.deps"
mkdir -p "$deps"

# A stamp holds the hash of the pin file it was installed from, so a second run does nothing
# and a changed pin reinstalls.
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# JavaScript clients: npm ci from the committed lock file, in .deps/ (git-ignored).
js_hash=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)
if ! stamp_ok "$deps/npm.stamp" "$js_hash"; then
  echo "interop: installing JavaScript clients (npm ci)"
  cp "$here/package.json" "$here/package-lock.json" "$deps/"
  (cd "$deps" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$js_hash" >"$deps/npm.stamp"
fi

# Python clients: a venv of their own, so the system Python stays untouched.
py_hash=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if ! stamp_ok "$deps/venv.stamp" "$py_hash"; then
  echo "interop: installing Python clients (venv + pip)"
  rm -rf "$deps/venv"
  python3 -m venv "$deps/venv"
  "$deps/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$py_hash" >"$deps/venv.stamp"
fi

export IMNOTIFY_BIN=${IMNOTIFY_BIN:-$root/target/debug/imnotify}
if [ ! -x "$IMNOTIFY_BIN" ]; then
  echo "interop: $IMNOTIFY_BIN is missing; run 'cargo build' first" >&2
  exit 2
fi
export INTEROP_NODE_MODULES="$deps/node_modules"
# Keep the source tree clean: no __pycache__ beside the client scripts.
export PYTHONDONTWRITEBYTECODE=1
exec "$deps/venv/bin/python" "$here/harness.py" "$@"
