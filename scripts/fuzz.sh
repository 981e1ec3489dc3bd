#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-fuzz (libFuzzer + AddressSanitizer) on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#
# cargo-fuzz drives rustc with nightly-only flags (-Zsanitizer=address and friends). The stable
# toolchain accepts them when RUSTC_BOOTSTRAP=1 is set, and ships the ASan runtime, so no nightly
# is needed. Runs are niced: the machine is shared. The corpus grows in fuzz/corpus/ (not
# tracked), seeded from the committed fuzz/seeds/. A crash leaves its input in fuzz/artifacts/
# and fails the script. Each target's exec count is appended to fuzz/stats.txt (not tracked).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
CARGO_FUZZ_VERSION=0.13.2
# Installed under the clone (.tools/cargo, ignored by git), like the other tools the scripts
# need, not into ~/.cargo/bin; it is run by its path, because cargo would prefer a
# ~/.cargo/bin/cargo-fuzz of another version to one on PATH.
tools=.tools/cargo
cargo_fuzz=("$tools/bin/cargo-fuzz" fuzz)
if ! "${cargo_fuzz[@]}" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$tools"
fi
export RUSTC_BOOTSTRAP=1
# The instrumented build of every dependency takes minutes; a target directory outside the
# clone lets a later run (CI clones afresh) reuse it. It is only a cache: missing, it is rebuilt.
target_dir="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imnotify-fuzz-target}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("${cargo_fuzz[@]}" list)
fi
# One build of every target before the clock starts; -a keeps debug assertions (overflow checks)
# on in the optimised build, so arithmetic bugs panic instead of wrapping.
nice -n 10 "${cargo_fuzz[@]}" build -a --target-dir "$target_dir"


for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log="fuzz/corpus/$t.log"
  echo "fuzz: $t for ${secs}s"
  # -timeout: an input that takes over 10 s is a hang, reported as a crash.
  if ! nice -n 10 "${cargo_fuzz[@]}" run -a --target-dir "$target_dir" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "$(date -u +%FT%TZ) $t: ${secs}s, $runs execs" | tee -a fuzz/stats.txt
done
echo "fuzz: ${#targets[@]} passed, 0 failed"
