#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine of this project's kind (Rust toolchain
# present). Installs whatever the tests need first, so nothing depends on a hand-made setup.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: curl drives the README example; the interop suite
# (tests/interop) also needs node with npm, python3 with venv, and openssl. Install only what is
# missing.
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
source scripts/lib/debian-packages.sh
install_missing_packages "${need[@]}"

# Each stage runs even when an earlier one failed (except after a failed build, which leaves
# nothing to test), and the run ends with one summary block: every stage, pass or fail, its
# count and its time. The exit status is non-zero if any stage failed.
summary=()
failures=()
failed=0
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

# The count a stage reports: the last "N passed, M failed" its output prints (nextest's
# "N tests run: ..." included), or the sum of cargo test's "test result" lines.
count_of() {
  local log=$1 line
  line=$(grep -aE '[0-9]+ (tests run|passed)' "$log" | grep -avE '^\s*(PASS|FAIL|SKIP) ' | tail -n 1 || true)
  if grep -aq 'SKIPPED' "$log"; then
    echo "skipped"
  elif grep -aq '^test result:' "$log"; then
    awk '/^test result:/ {for (i = 1; i <= NF; i++) {if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i}}
         END {printf "%d passed, %d failed", p, f}' "$log"
  elif [ -n "$line" ]; then
    grep -aoE '[0-9]+ (tests run: )?[0-9]* ?passed.*' <<<"$line" | sed -E 's/^[0-9]+ tests run: //; s/\x1b\[[0-9;]*m//g' | head -c 80
  else
    echo "-"
  fi
}

stage() {
  local name=$1
  shift
  local log="$logdir/${name// /_}.log" began=$SECONDS status
  echo "=== $name"
  if "$@" 2>&1 | tee "$log"; then status=pass; else status=FAIL; failed=1; fi
  # A failed stage names its failed tests in the summary too: the summary is often all of the
  # output that survives (nextest's FAIL/TIMEOUT/SIG* lines, cargo test's "---- name" headers).
  if [ "$status" = FAIL ]; then
    while IFS= read -r line; do
      failures+=("$name: $line")
    done < <(sed -E 's/\x1b\[[0-9;]*m//g' "$log" \
      | grep -aE '^\s+(FAIL|TIMEOUT|SIG[A-Z]+|LEAK) \[|^---- .* ----$' \
      | sed -E 's/^\s+//' | sort -u | head -n 20 || true)
  fi
  summary+=("$(printf '%-22s %-5s %6ss  %s' "$name" "$status" "$((SECONDS - began))" "$(count_of "$log")")")
  [ "$status" = pass ]
}

print_summary() {
  echo
  echo "=== summary"
  printf '%-22s %-5s %7s  %s\n' stage result time count
  printf '%s\n' "${summary[@]}"
  if [ "${#failures[@]}" != 0 ]; then
    echo "failed tests:"
    printf '  %s\n' "${failures[@]}"
  fi
  if [ "$failed" = 0 ]; then echo "all stages passed"; else echo "SOME STAGES FAILED"; fi
}

run_tests() {
  # nextest ships with this machine's toolchain; plain cargo test is the fallback.
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --workspace --all-targets --no-fail-fast "$@"
  else
    cargo test --locked --workspace --all-targets --no-fail-fast "$@"
  fi
}

# The SMTP server of the e-mail tests (aiosmtpd from PyPI, in a venv of its own).
stage "smtp server" bash scripts/smtp-deps.sh || true

# One build of every target, in the debug profile, then the tests.
if ! stage build cargo build --locked --workspace --all-targets; then
  print_summary
  exit 1
fi
# Our own house rules: no stray files at the root (see scripts/pre-commit.sh).
stage "pre-commit" bash scripts/pre-commit.sh || true
# The README's quick start, exactly as a newcomer runs it.
stage "readme example" bash scripts/readme-example.sh || true
# The real Bitrix24 clients (npm, PyPI, curl) against the binary just built.
stage interop bash tests/interop/run.sh || true
# Bitrix24's PullClient against the built-in Push&Pull server (WebSocket and long polling).
stage "push&pull" bash tests/pull/run.sh || true
stage tests run_tests "$@" || true
# The examples in the client crates' docs (nextest does not run doctests).
stage doctests cargo test --locked --doc -p imnotify-wire -p imnotify-client --all-features || true
# bench/run.sh in its smoke form (debug build, 1 s scenarios): the harness keeps working;
# nothing about speed is asserted.
stage "bench smoke" env BENCH_SMOKE=1 bash bench/run.sh || true
# The notification center in Debian's chromium (installs chromium and playwright-core).
stage browser bash scripts/browser-test.sh || true

# The same suites on PostgreSQL (issue 14), written once: with IMNOTIFY_TEST_PG set, every test
# server, in nextest (tests/common) as in the interop, push&pull, browser and crash harnesses,
# runs on a fresh database of its own (scripts/pg.sh newdb) and reads state through the API or
# psql. One throwaway cluster serves them all: no test sees another's database. Tests about
# SQLite itself say so and return early.
if pg_url=$(bash scripts/pg.sh start); then
  export IMNOTIFY_TEST_PG=$pg_url
  stage "tests (postgres)" run_tests "$@" || true
  stage "interop (postgres)" bash tests/interop/run.sh || true
  stage "push&pull (postgres)" bash tests/pull/run.sh || true
  stage "browser (postgres)" bash scripts/browser-test.sh || true
  if [ "${RELIABILITY_QUICK:-0}" != 1 ]; then
    stage "crash test (postgres)" bash scripts/crash-test.sh --kills 3 || true
  fi
  unset IMNOTIFY_TEST_PG
  bash scripts/pg.sh stop
else
  summary+=("$(printf '%-22s %-5s' "postgres stages" FAIL)  (scripts/pg.sh start failed)")
  failed=1
fi
# Several instances behind Debian's nginx with deploy/nginx.conf, and the cluster-wide limits
# on PostgreSQL (issue 14; installs nginx, starts its own PostgreSQL with scripts/pg.sh).
stage cluster bash scripts/cluster-test.sh || true

# Reliability and security checks (issue 7), in their short CI forms. Each installs what it
# needs from crates.io or PyPI (cargo tools under .tools/cargo). RELIABILITY_QUICK=1 skips
# them for a fast local loop.
if [ "${RELIABILITY_QUICK:-0}" != 1 ]; then
  stage audit bash scripts/audit.sh || true
  stage "crash test" bash scripts/crash-test.sh --kills 3 || true
  stage schemathesis bash scripts/schemathesis.sh 25 || true
  stage fuzz bash scripts/fuzz-smoke.sh || true
else
  summary+=("$(printf '%-22s %-5s' "reliability checks" skip)  (RELIABILITY_QUICK=1)")
fi
print_summary
exit "$failed"
