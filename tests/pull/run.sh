#!/usr/bin/env bash
# Bitrix24's PullClient against the built-in Push&Pull server (issue 13): installs the pinned
# JavaScript clients of the interop suite (the same package.json, lock and .deps/), makes a
# throw-away CA and a localhost certificate with openssl (B24Hook is https-only), then runs
# pull_client.cjs over WebSocket and over long polling.
#
#   tests/pull/run.sh                  # the checks, both transports
#   tests/pull/run.sh bench 100        # latency, REST answer -> notifyAdd, WebSocket
#   tests/pull/run.sh bench-poll 100   # the same over long polling
#   IMNOTIFY_TEST_PG=$(scripts/pg.sh url) tests/pull/run.sh   # the checks on PostgreSQL
#
# The server binary is target/debug/imnotify (cargo build), or $IMNOTIFY_BIN.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
interop="$root/tests/interop"
deps="$interop/.deps"
mkdir -p "$deps"

# The interop suite's install, with its stamp: whichever runs first installs for both.
js_hash=$(cat "$interop/package.json" "$interop/package-lock.json" | sha256sum | cut -d' ' -f1)
if ! { [ -f "$deps/npm.stamp" ] && [ "$(cat "$deps/npm.stamp")" = "$js_hash" ]; }; then
  echo "pull: installing JavaScript clients (npm ci)"
  cp "$interop/package.json" "$interop/package-lock.json" "$deps/"
  (cd "$deps" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$js_hash" >"$deps/npm.stamp"
fi

export IMNOTIFY_BIN=${IMNOTIFY_BIN:-$root/target/debug/imnotify}
if [ ! -x "$IMNOTIFY_BIN" ]; then
  echo "pull: $IMNOTIFY_BIN is missing; run 'cargo build' first" >&2
  exit 2
fi

certs=$(mktemp -d)
trap 'rm -rf "$certs"' EXIT
ossl() { openssl "$@" >/dev/null 2>&1; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=imnotify pull test CA" -keyout "$certs/ca.key" -out "$certs/ca.pem"
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$certs/server.key" -out "$certs/server.csr"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$certs/server.ext"
ossl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
  -CAcreateserial -days 2 -extfile "$certs/server.ext" -out "$certs/server.pem"

export NODE_EXTRA_CA_CERTS="$certs/ca.pem" PULL_CERT="$certs/server.pem" PULL_KEY="$certs/server.key"
export NODE_PATH="$deps/node_modules"
if [ $# -gt 0 ]; then
  exec timeout 600 node "$here/pull_client.cjs" "$@"
fi
echo "pull: backend ${IMNOTIFY_TEST_PG:+PostgreSQL at }${IMNOTIFY_TEST_PG:-SQLite}"
status=0
timeout 180 node "$here/pull_client.cjs" ws || status=1
timeout 180 node "$here/pull_client.cjs" oauth || status=1
timeout 180 node "$here/pull_client.cjs" expire || status=1
timeout 180 node "$here/pull_client.cjs" poll || status=1
exit $status
