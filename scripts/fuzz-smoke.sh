#!/usr/bin/env bash
# CI's fuzz smoke: every target for 30 s (FUZZ_SMOKE_SECS to change it). See scripts/fuzz.sh.
set -euo pipefail
exec "$(dirname "$0")/fuzz.sh" "${FUZZ_SMOKE_SECS:-30}"
