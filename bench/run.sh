#!/usr/bin/env bash
# The performance benchmark (issue 6): one command, every number a ratio against a baseline
# measured in the same run on the same core split.
#
#   bench/run.sh                      # defaults: 10 s per scenario, 256 connections, 10 M rows
#   BENCH_ROWS=1000000 bench/run.sh   # a smaller "large database" scenario
#
# Scenarios, each after a short warm-up:
#   baseline   examples/baseline.rs: hyper, fixed JSON answer of imnotify's answer size
#   empty      im.notify.system.add on a fresh data dir, closed loop at full speed
#   half       the same at about half the "empty" rate (think time per connection; Debian has
#              no wrk2, so this is a closed loop with a delay, not an open-loop fixed rate)
#   large      full speed again after BENCH_ROWS notifications were bulk-inserted
#   get        im.notify.get on the empty and the large database, when the method exists
#
# Settings (environment): BENCH_DURATION (s, default 10), BENCH_WARMUP (s, 2), BENCH_CONNS (256),
# BENCH_THREADS (wrk threads, 1), BENCH_ROWS (10000000; 0 skips "large"), BENCH_SERVER_CPUS and
# BENCH_LOAD_CPUS (taskset lists; default 0 and 1 on a machine with 2 or more cores),
# BENCH_OUT (report file; default a new temporary directory), BENCH_KEEP=1 keeps the data dirs,
# BENCH_BIN (an imnotify binary to measure instead of the one built here).
set -euo pipefail
cd "$(dirname "$0")/.."
# --pg: afterwards, the PostgreSQL scenarios of bench/pg.sh (one and three instances, and the
# cross-instance delivery latency), with their own baseline and SQLite references.
with_pg=0
if [ "${1:-}" = --pg ]; then with_pg=1; shift; fi
root=$(pwd)

duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
conns=${BENCH_CONNS:-256}
threads=${BENCH_THREADS:-1}
rows=${BENCH_ROWS:-10000000}

# --- tools -----------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
fi

echo "building (release)..." >&2
cargo build --release --locked --bin imnotify --example baseline >&2
# BENCH_BIN: benchmark another imnotify build (an A/B comparison) against the same baseline.
bin=${BENCH_BIN:-"$root/target/release/imnotify"}
baseline_bin="$root/target/release/examples/baseline"

# Both servers get the same cores, and the load generator the others, so that neither steals
# the other's CPU; the split is the same for the baseline and for imnotify.
if [ "$(nproc)" -ge 2 ]; then
  server_cpus=${BENCH_SERVER_CPUS:-0}
  load_cpus=${BENCH_LOAD_CPUS:-1}
  # taskset execs the command, so $! is the server's own pid (for /proc and for kill).
  on_server=(taskset -c "$server_cpus")
  on_load=(taskset -c "$load_cpus")
else
  server_cpus=all
  load_cpus=all
  on_server=()
  on_load=()
fi

work=$(mktemp -d -t imnotify-bench.XXXXXX)
out=${BENCH_OUT:-$work/report.md}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$work/data"; fi
}
trap cleanup EXIT

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# wrk with one of the scripts; prints the script's BENCH line.
drive() { # url script [delay_ms] [duration]
  BENCH_HOOK=$hook BENCH_DELAY_MS=${3:-0} "${on_load[@]}" \
    wrk -t"$threads" -c"$conns" -d"${4:-$duration}s" --timeout 10s -s "$root/bench/$2" "$1" \
    | grep '^BENCH '
}
field() { sed -E "s/.* $2=([0-9]+).*/\1/" <<<"$1"; }
rps() { awk -v r="$(field "$1" requests)" -v d="$(field "$1" duration_us)" 'BEGIN { printf "%.0f", r / (d / 1e6) }'; }
ms() { awk -v us="$(field "$1" "$2")" 'BEGIN { printf "%.2f", us / 1000 }'; }
check_ok() {
  if [ "$(field "$1" non2xx)" != 0 ] || [ "$(field "$1" sockerr)" != 0 ]; then
    echo "warning: $2: $(field "$1" non2xx) non-2xx answers, $(field "$1" sockerr) socket errors" >&2
  fi
}

serve_args=()
if "$bin" serve --help | grep -q -- '--no-limits'; then serve_args+=(--no-limits); fi

# Starts imnotify on $1 (data dir); sets $server_pid, $url; on a fresh dir also $hook.
start_imnotify() {
  local log="$work/imnotify.$(basename "$1").log"
  # The filler rows are dated in the past and a tenth belong to user 1: retention and the
  # per-recipient cap would remove them during the measurement, and quick_check would read
  # gigabytes before the start.
  IMNOTIFY_RETENTION__DAYS=0 IMNOTIFY_LIMITS__MAX_NOTIFICATIONS_PER_USER=0 IMNOTIFY_STORAGE__QUICK_CHECK=false \
  IMNOTIFY_LOG__FORMAT=json "${on_server[@]}" "$bin" serve --listen 127.0.0.1:0 --data-dir "$1" \
    "${serve_args[@]}" >"$log.out" 2>>"$log" &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 600); do
    if grep -qs '^imnotify listening on ' "$log.out"; then break; fi
    sleep 0.1
  done
  url=$(sed -n 's/^imnotify listening on //p' "$log.out")
  [ -n "$url" ] || { echo "imnotify did not start: $(cat "$log.out" "$log")" >&2; exit 1; }
  local h
  h=$(sed -n 's/^Webhook: //p' "$log.out")
  if [ -n "$h" ]; then hook=${h#"$url"}; fi
}
stop_imnotify() {
  kill -TERM "$server_pid"
  wait "$server_pid" 2>/dev/null || true
}

# What one fsync costs on this disk: with commit-before-ack, a connection cannot send more than
# one request per commit, so conns / fsync time bounds imnotify's rate whatever the CPU does.
mkdir -p "$work/data"
fsync_start=$(date +%s%N)
dd if=/dev/zero of="$work/data/fsync-probe" bs=4k count=200 oflag=dsync 2>/dev/null
fsync_ms=$(awk -v ns="$(($(date +%s%N) - fsync_start))" 'BEGIN { printf "%.2f", ns / 200 / 1e6 }')
rm -f "$work/data/fsync-probe"

# --- baseline ---------------------------------------------------------------------------------
mkdir -p "$work/data"
start_imnotify "$work/data/empty"
answer=$(curl -s -H 'Content-Type: application/json' \
  -d '{"USER_ID":1,"MESSAGE":"size probe"}' "$url${hook}im.notify.system.add.json")
answer_bytes=${#answer}
idle_kb=$(rss_kb "$server_pid" VmRSS)
stop_imnotify

"${on_server[@]}" "$baseline_bin" 127.0.0.1:0 "$answer_bytes" >"$work/baseline.out" &
base_pid=$!
pids+=("$base_pid")
for _ in $(seq 100); do grep -qs '^listening on ' "$work/baseline.out" && break; sleep 0.1; done
base_url="http://$(sed -n 's/^listening on //p' "$work/baseline.out")"
echo "baseline: warm-up, then ${duration}s..." >&2
drive "$base_url" notify.lua 0 "$warmup" >/dev/null
base=$(drive "$base_url" notify.lua)
check_ok "$base" baseline
kill "$base_pid"
wait "$base_pid" 2>/dev/null || true
base_rps=$(rps "$base")

# --- imnotify on an empty database ---------------------------------------------------------------
rm -rf "$work/data/empty"
start_imnotify "$work/data/empty"
sleep 1
idle_kb=$(rss_kb "$server_pid" VmRSS)
echo "imnotify (empty): warm-up, then ${duration}s..." >&2
drive "$url" notify.lua 0 "$warmup" >/dev/null
empty=$(drive "$url" notify.lua)
check_ok "$empty" empty
empty_rps=$(rps "$empty")

# Half of peak: each connection waits so that conns / (delay + latency) is about half the peak.
half_target=$((empty_rps / 2))
half_delay=$(awk -v c="$conns" -v t="$half_target" -v l="$(field "$empty" p50_us)" \
  'BEGIN { d = c * 1000 / t - l / 1000; if (d < 1) d = 1; printf "%.0f", d }')
echo "imnotify (half load, ${half_delay} ms think time): ${duration}s..." >&2
half=$(drive "$url" notify.lua "$half_delay")
check_ok "$half" half
half_rps=$(rps "$half")

get_supported=0
probe=$(curl -s "$url${hook}im.notify.get.json")
if ! grep -q ERROR_METHOD_NOT_FOUND <<<"$probe"; then get_supported=1; fi
if [ "$get_supported" = 1 ]; then
  get_empty=$(BENCH_QUERY="im.notify.get.json" drive "$url" get.lua)
fi
peak_kb=$(rss_kb "$server_pid" VmHWM)
after_kb=$(rss_kb "$server_pid" VmRSS)
stop_imnotify

# --- imnotify with many stored notifications ------------------------------------------------
if [ "$rows" -gt 0 ]; then
  db="$work/data/empty/imnotify.sqlite3"
  echo "bulk-inserting $rows notifications..." >&2
  fill_start=$(date +%s)
  # Indexes are dropped and rebuilt around the insert: building them sorted is many times
  # faster than updating five B-trees row by row. This is set-up, so it need not be durable.
  idx=$(sqlite3 "$db" "SELECT sql || ';' FROM sqlite_master WHERE type = 'index' AND tbl_name = 'notifications' AND sql IS NOT NULL")
  drops=$(sqlite3 "$db" "SELECT 'DROP INDEX ' || name || ';' FROM sqlite_master WHERE type = 'index' AND tbl_name = 'notifications' AND sql IS NOT NULL")
  # 10% of the rows belong to user 1 (the benchmark's recipient, so its per-user indexes are
  # deep); the rest to 1000 other recipients. A quarter carry a tag.
  sqlite3 "$db" <<SQL
PRAGMA synchronous = OFF;
PRAGMA cache_size = -262144;
BEGIN;
$drops
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $rows)
INSERT INTO notifications (user_id, author_id, notify_type, text, text_out, tag, sub_tag, attach, created_at)
SELECT CASE WHEN i % 10 = 0 THEN 1 ELSE 2 + i % 1000 END, 0, 4,
       'Filler notification #' || i || ' with a [b]typical[/b] length of text', '',
       CASE WHEN i % 4 = 0 THEN 'MP|4f2e1|FILL_' || (i % 50000) END, NULL, NULL, 1764000000 + i / 100
  FROM n;
$idx
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
  # The fill ran without fsync: flush it now, or the writeback of a gigabyte of dirty pages
  # would land in the middle of the measurement.
  sync "$db"
  fill_secs=$(($(date +%s) - fill_start))
  db_mb=$(du -m "$db" | cut -f1)
  start_imnotify "$work/data/empty"
  echo "imnotify ($rows rows): warm-up, then ${duration}s..." >&2
  drive "$url" notify.lua 0 "$warmup" >/dev/null
  large=$(drive "$url" notify.lua)
  check_ok "$large" large
  large_rps=$(rps "$large")
  if [ "$get_supported" = 1 ]; then
    get_large=$(BENCH_QUERY="im.notify.get.json" drive "$url" get.lua)
  fi
  large_peak_kb=$(rss_kb "$server_pid" VmHWM)
  stop_imnotify
fi

# --- report -------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo MISSED; fi; }
{
  echo "## Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "wrk -t$threads -c$conns -d${duration}s (after ${warmup}s warm-up), server on CPUs $server_cpus, wrk on CPUs $load_cpus;" \
    "bodies from bench/notify.lua; answer size $answer_bytes bytes; serve args: ${serve_args[*]:-none};" \
    "one 4 KiB write+fsync (dd oflag=dsync) on the data dir's disk: $fsync_ms ms"
  echo
  echo "| scenario | req/s | vs baseline | p50 ms | p99 ms |"
  echo "|---|---|---|---|---|"
  echo "| baseline (hyper, fixed answer) | $base_rps | 100% | $(ms "$base" p50_us) | $(ms "$base" p99_us) |"
  echo "| imnotify, empty db | $empty_rps | $(ratio "$empty_rps" "$base_rps") | $(ms "$empty" p50_us) | $(ms "$empty" p99_us) |"
  echo "| imnotify, ~half load (${half_delay} ms think time) | $half_rps | $(ratio "$half_rps" "$base_rps") | $(ms "$half" p50_us) | $(ms "$half" p99_us) |"
  if [ "$rows" -gt 0 ]; then
    echo "| imnotify, $rows rows (${db_mb} MB, filled in ${fill_secs}s) | $large_rps | $(ratio "$large_rps" "$base_rps") | $(ms "$large" p50_us) | $(ms "$large" p99_us) |"
  fi
  if [ "$get_supported" = 1 ]; then
    echo "| im.notify.get, empty db | $(rps "$get_empty") | | $(ms "$get_empty" p50_us) | $(ms "$get_empty" p99_us) |"
    if [ "$rows" -gt 0 ]; then
      echo "| im.notify.get, $rows rows | $(rps "$get_large") | | $(ms "$get_large" p50_us) | $(ms "$get_large" p99_us) |"
    fi
  fi
  echo
  echo "RSS: idle $(mb "$idle_kb") MB, peak (VmHWM) $(mb "$peak_kb") MB, after load $(mb "$after_kb") MB${large_peak_kb:+, peak with $rows rows $(mb "$large_peak_kb") MB}"
  echo
  echo "| target | measured | verdict |"
  echo "|---|---|---|"
  echo "| durable throughput >= 50% of baseline | $(ratio "$empty_rps" "$base_rps") | $(verdict "$empty_rps >= $base_rps / 2") |"
  echo "| p99 <= 5 ms at ~half of peak ($half_rps req/s offered by think time) | $(ms "$half" p99_us) ms | $(verdict "$(field "$half" p99_us) <= 5000") |"
  if [ "$rows" -gt 0 ]; then
    echo "| throughput with $rows rows within 15% of empty | $(ratio "$large_rps" "$empty_rps") of empty | $(verdict "$large_rps >= $empty_rps * 0.85") |"
  else
    echo "| throughput with many rows within 15% of empty | not run (BENCH_ROWS=0) | - |"
  fi
  if [ "$get_supported" = 1 ] && [ "$rows" -gt 0 ]; then
    echo "| im.notify.get p50 independent of rows | $(ms "$get_empty" p50_us) ms empty, $(ms "$get_large" p50_us) ms with $rows rows | $(verdict "$(field "$get_large" p50_us) <= 2 * $(field "$get_empty" p50_us) + 500") |"
  else
    echo "| im.notify.get latency independent of rows | skipped: im.notify.get is not implemented in this build | - |"
  fi
  echo "| idle RSS < 30 MB | $(mb "$idle_kb") MB | $(verdict "$idle_kb < 30 * 1024") |"
  echo "| peak RSS < 150 MB | $(mb "${large_peak_kb:-$peak_kb}") MB | $(verdict "${large_peak_kb:-$peak_kb} < 150 * 1024 && $peak_kb < 150 * 1024") |"
} | tee "$out"
echo "report: $out" >&2
if [ "$with_pg" = 1 ]; then
  BENCH_BIN=$bin bash "$root/bench/pg.sh"
fi
