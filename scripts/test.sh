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
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
fi

# The SMTP server of the e-mail tests (aiosmtpd from PyPI, in a venv of its own).
bash scripts/smtp-deps.sh

# One build of every target, in the debug profile, then the tests.
cargo build --locked --all-targets
# The README's quick start, exactly as a newcomer runs it.
bash scripts/readme-example.sh
# The real Bitrix24 clients (npm, PyPI, curl) against the binary just built.
bash tests/interop/run.sh
# The notification center in Debian's chromium (installs chromium and playwright-core).
bash scripts/browser-test.sh
# nextest ships with this machine's toolchain; plain cargo test is the fallback.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --all-targets --no-fail-fast "$@"
else
  cargo test --locked --all-targets --no-fail-fast "$@"
fi

# Reliability and security checks (issue 7), in their short CI forms. Each installs what it
# needs from crates.io or PyPI. RELIABILITY_QUICK=1 skips them for a fast local loop.
if [ "${RELIABILITY_QUICK:-0}" != 1 ]; then
  bash scripts/audit.sh
  bash scripts/crash-test.sh --kills 3
  bash scripts/schemathesis.sh 25
  # Last, so that its "N passed, N failed" line closes the output.
  bash scripts/fuzz-smoke.sh
fi
