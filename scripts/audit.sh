#!/usr/bin/env bash
# Known-vulnerability check of Cargo.lock with cargo-audit (RustSec advisory database).
#
# The advisory database is a git repository fetched from GitHub at run time. This project's
# machines reach only the package registries, so by default the check is skipped at once, before
# installing anything and without trying the network: an unreachable database says nothing about
# the code, and building cargo-audit only to skip would cost minutes of CI. Set AUDIT_DB=DIR to
# check against a local checkout of the database, or AUDIT_FETCH=1 where GitHub is reachable;
# AUDIT_REQUIRED=1 makes a skip a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_AUDIT_VERSION=0.22.2
if [ -z "${AUDIT_DB:-}" ] && [ "${AUDIT_FETCH:-0}" != 1 ]; then
  echo "audit: SKIPPED: no advisory database (set AUDIT_DB=DIR or AUDIT_FETCH=1)" >&2
  [ "${AUDIT_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
fi
# Installed under the clone (.tools/cargo), not into ~/.cargo/bin, and run by its path.
tools=.tools/cargo
cargo_audit=("$tools/bin/cargo-audit" audit)
if ! "${cargo_audit[@]}" --version 2>/dev/null | grep -q "$CARGO_AUDIT_VERSION"; then
  if ! cargo install cargo-audit --locked --version "$CARGO_AUDIT_VERSION" --root "$tools"; then
    echo "audit: SKIPPED: cargo-audit could not be installed from crates.io" >&2
    exit 0
  fi
fi
db="${AUDIT_DB:-${CARGO_HOME:-$HOME/.cargo}/advisory-db}"
args=(--db "$db")
[ -n "${AUDIT_DB:-}" ] && args+=(--no-fetch --stale)
if ! out=$(timeout 120 "${cargo_audit[@]}" "${args[@]}" 2>&1); then
  if grep -qiE "fetch|network|resolve|connect|couldn't|could not|git" <<<"$out" && [ ! -d "$db/crates" ]; then
    echo "$out" | tail -n 5 >&2
    echo "audit: SKIPPED: the RustSec advisory database could not be fetched" >&2
    [ "${AUDIT_REQUIRED:-0}" = 1 ] && exit 1
    exit 0
  fi
  echo "$out"
  exit 1
fi
echo "$out" | tail -n 3
echo "audit: Cargo.lock has no known advisories"
