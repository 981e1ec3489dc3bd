#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a figure that does not move with the
# machine's load, for before/after comparisons of CPU work (issue 15) on a shared machine where
# req/s and even CPU time per request swing by 30 % between runs. It counts user-space
# instructions only: the kernel's share (sockets, fsync) is not in it; `bench/run.sh` measures
# that side. Each server runs under callgrind with instrumentation off while it starts and
# warms up, then on for the measured wrk run only.
#
#   bench/instructions.sh                    # the baseline, then im.notify.system.add (release)
#   bench/instructions.sh A B                # two imnotify binaries, A then B
#   INSTR_SCRIPT=get.lua INSTR_PRE=notify.lua bench/instructions.sh   # im.notify.get after adds
#
# Settings: INSTR_SECS (measured seconds, default 15), INSTR_CONNS (wrk connections, 32),
# INSTR_SCRIPT (a bench/*.lua, default notify.lua), INSTR_PRE (warm-up script, default the
# same), INSTR_TOP (functions listed per binary, default 25: inclusive instructions per
# request), INSTR_KEEP=1 keeps the callgrind files, INSTR_LIMITS=operating serves with the
# default operating-time limit instead of --no-limits (the rate limit off, which would refuse
# the load).
#
# Requests per second under callgrind are a few dozen; group commits are smaller than at full
# speed, so the writer's per-request share is higher than in `bench/run.sh`'s runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
secs=${INSTR_SECS:-15}
conns=${INSTR_CONNS:-32}
script=${INSTR_SCRIPT:-notify.lua}
pre=${INSTR_PRE:-$script}
top=${INSTR_TOP:-25}
case ${INSTR_LIMITS:-none} in
  none) limit_args=(--no-limits) rate_on=true ;;
  operating) limit_args=() rate_on=false ;;
  *) echo "INSTR_LIMITS is none or operating" >&2; exit 2 ;;
esac

# A developer's tool, not run by CI: it names what is missing rather than install it.
for tool in valgrind wrk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool (apt-get install $tool)" >&2; exit 1; }
done

if [ $# -eq 0 ]; then
  cargo build --release --locked --bin imnotify --example baseline >&2
  bins=("$root/target/release/imnotify")
  with_baseline=1
else
  bins=("$@")
  with_baseline=0
fi

work=$(mktemp -d -t imnotify-instr.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  if [ "${INSTR_KEEP:-0}" != 1 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT

# Runs wrk against $1 with $hook; prints the BENCH line.
drive() { # url script secs
  BENCH_HOOK=$hook wrk -t1 -c"$conns" -d"$3s" --timeout 30s -s "$root/bench/$2" "$1" | grep '^BENCH '
}
field() { sed -E "s/.* $2=([0-9]+).*/\1/" <<<"$1"; }

# measure NAME OUT URL: warm up, count instructions over the measured run, report per request.
measure() {
  local name=$1 out=$2 url=$3 line requests total
  drive "$url" "$pre" 3 >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  line=$(drive "$url" "$script" "$secs")
  callgrind_control -i off "$pid" >/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
  requests=$(field "$line" requests)
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t { gsub(",", "", $1); t = $1 } END { print t }')
  if [ "$(field "$line" non2xx)" != 0 ]; then
    echo "warning: $name: $(field "$line" non2xx) non-2xx answers" >&2
  fi
  printf '%s: %s requests, %s instructions per request\n' "$name" "$requests" \
    "$(awk -v t="$total" -v r="$requests" 'BEGIN { printf "%.0f", t / r }')"
  if [ "$top" != 0 ]; then
    callgrind_annotate --inclusive=yes "$out" 2>/dev/null \
      | awk -v r="$requests" -v n="$top" '/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ {
          x = $1; gsub(",", "", x); $1 = ""; $2 = "";
          sub(/^ +\?\?\?:/, ""); sub(/ \[[^]]*\]$/, "");
          if (++k <= n) printf "  %9.1fk  %s\n", x / r / 1000, substr($0, 1, 150) }'
  fi
}

if [ "$with_baseline" = 1 ]; then
  hook=/rest/1/x/
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/baseline.cg" \
    "$root/target/release/examples/baseline" 127.0.0.1:0 246 >"$work/baseline.out" 2>"$work/baseline.err" &
  pid=$!
  for _ in $(seq 300); do grep -qs '^listening on ' "$work/baseline.out" && break; sleep 0.2; done
  INSTR_TOP=0 top=0 measure "baseline (hyper, fixed answer)" "$work/baseline.cg" \
    "http://$(sed -n 's/^listening on //p' "$work/baseline.out")"
  top=${INSTR_TOP:-25}
fi

n=0
for bin in "${bins[@]}"; do
  n=$((n + 1))
  data="$work/data$n"
  IMNOTIFY_RETENTION__DAYS=0 IMNOTIFY_LIMITS__MAX_NOTIFICATIONS_PER_USER=0 IMNOTIFY_LOG__FORMAT=json \
    IMNOTIFY_LIMITS__RATE__ENABLED=$rate_on valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/imnotify$n.cg" \
    "$bin" serve --listen 127.0.0.1:0 --data-dir "$data" "${limit_args[@]}" >"$work/out$n" 2>"$work/err$n" &
  pid=$!
  for _ in $(seq 600); do grep -qs '^imnotify listening on ' "$work/out$n" && break; sleep 0.2; done
  url=$(sed -n 's/^imnotify listening on //p' "$work/out$n")
  [ -n "$url" ] || { echo "imnotify did not start: $(cat "$work/out$n" "$work/err$n")" >&2; exit 1; }
  h=$(sed -n 's/^Webhook: //p' "$work/out$n")
  hook=${h#"$url"}
  measure "$bin ($script)" "$work/imnotify$n.cg" "$url"
done
