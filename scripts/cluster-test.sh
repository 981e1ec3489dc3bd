#!/usr/bin/env bash
# The multi-instance checks of issue 14: Debian's nginx with deploy/nginx.conf in front of
# imnotify (tests/cluster.rs), and the cluster-wide limits on a real PostgreSQL
# (tests/cluster_limits.rs). Installs nginx when missing (scripts/nginx-deps.sh); starts a
# throwaway PostgreSQL with scripts/pg.sh when that script exists and IMNOTIFY_TEST_PG is not
# already set, and stops it afterwards. Tests without their service print why they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/nginx-deps.sh
if [ -z "${IMNOTIFY_TEST_PG:-}" ] && [ -f scripts/pg.sh ]; then
  bash scripts/pg.sh start
  trap 'bash scripts/pg.sh stop' EXIT
  IMNOTIFY_TEST_PG=$(bash scripts/pg.sh url)
  export IMNOTIFY_TEST_PG
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast -p imnotify --test cluster --test cluster_limits --test migrate
else
  cargo test --locked --no-fail-fast -p imnotify --test cluster --test cluster_limits --test migrate
fi
