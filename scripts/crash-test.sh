#!/usr/bin/env bash
# The crash test (tests/crash/crash_test.py): load, kill -9, restart, check nothing acknowledged
# was lost. CI runs the short form; pass --kills 20 for the full one.
#
#   scripts/crash-test.sh [--kills N] [--seed S] ...
#   IMNOTIFY_TEST_PG=$(scripts/pg.sh url) scripts/crash-test.sh   # the same on PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --bin imnotify
exec python3 tests/crash/crash_test.py --bin target/debug/imnotify "$@"
