#!/usr/bin/env bash
# The notification center and the admin page in a real browser: Debian's chromium driven by playwright-core (from
# npm, pinned by tests/browser/package-lock.json) against the debug binary. Never downloads a
# browser. Screenshots go to target/artifacts/.
#   scripts/browser-test.sh            every test in tests/browser/*.test.mjs
#   scripts/browser-test.sh latency    also the latency measurement (100 notifications)
# With IMNOTIFY_TEST_PG=$(scripts/pg.sh url) every test server runs on a fresh PostgreSQL database.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
source scripts/lib/debian-packages.sh
install_missing_packages "${need[@]}"

# playwright-core alone: it has no browser download step.
(cd tests/browser && npm ci --no-audit --no-fund --silent)
[ -x target/debug/imnotify ] || cargo build --locked --bin imnotify
mkdir -p target/artifacts

echo "browser: backend ${IMNOTIFY_TEST_PG:+PostgreSQL at }${IMNOTIFY_TEST_PG:-SQLite}"
(cd tests/browser && node --test --test-concurrency=1 ./*.test.mjs)
if [ "${1:-}" = latency ]; then
  node tests/browser/latency.mjs 100
fi
