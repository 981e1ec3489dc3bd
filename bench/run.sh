#!/usr/bin/env bash
# The performance benchmark (issues 6 and 15): one command, every number a ratio against a
# baseline measured in the same run on the same core split.
#
#   bench/run.sh                      # defaults: 10 s per scenario, 256 connections, 10 M rows
#   BENCH_ROWS=1000000 bench/run.sh   # a smaller "large database" scenario
#   BENCH_SMOKE=1 bench/run.sh        # CI: a debug build, 1 s per scenario, no verdict matters
#   bench/run.sh --pg                 # then the PostgreSQL backend's scenarios (bench/pg.sh)
#
# Scenarios, each after a short warm-up:
#   baseline   examples/baseline.rs: hyper, fixed JSON answer of imnotify's answer size
#   empty      im.notify.system.add on a fresh data dir, closed loop at full speed
#   journal    the same with the request journal off (journal.capacity = 0): its cost (issue 16)
#   half       the same at about half the "empty" rate (think time per connection; Debian has
#              no wrk2, so this is a closed loop with a delay, not an open-loop fixed rate)
#   open       goal 2: half the "empty" rate offered open-loop at a fixed rate by oha (crates.io)
#              with --latency-correction, so a stalled server is charged for every request it
#              delayed (no coordinated omission); JSON bodies of bench/notify.lua's mix
#   batch      one connection: a single add, then a `batch` of BENCH_BATCH adds (goal 4)
#   sse        "empty" again with BENCH_SUBSCRIBERS (100) SSE streams of user 1 open, each a curl on
#              the load CPUs draining it, so every add goes out on every stream (goal 5)
#   large      full speed again after BENCH_ROWS notifications were bulk-inserted
#   get        im.notify.get on the empty and the large database, when the method exists
#
# Every scenario also reports the server's CPU time per request: its user+sys time (from
# /proc/PID/stat) over the measurement, divided by the requests served. On a shared machine it
# is steadier than req/s.
#
# Settings (environment): BENCH_DURATION (s, default 10), BENCH_WARMUP (s, 2), BENCH_CONNS (256),
# BENCH_THREADS (wrk threads, 1), BENCH_ROWS (10000000; 0 skips "large"), BENCH_BATCH (50),
# BENCH_SUBSCRIBERS (SSE streams of the "sse" scenario, 100; 0 skips it),
# BENCH_SERVER_CPUS and BENCH_LOAD_CPUS (taskset lists; default 0 and 1 on a machine with 2 or
# more cores), BENCH_OUT (report file; default a new temporary directory), BENCH_KEEP=1 keeps
# the data dirs, BENCH_BIN (an imnotify binary to measure instead of the one built here; an A/B
# against BENCH_BIN_B, when set, runs the "empty" scenario on both), BENCH_PROFILE (release, or
# debug for a quick check), BENCH_NO_BUILD=1 (use the binaries already built), BENCH_OPEN_LOOP
# (1: the "open" scenario, installing oha into .tools/cargo the first time, a few minutes of
# build under nice; 0: skip it; the default is 1, and under BENCH_SMOKE only if oha is there).
set -euo pipefail
cd "$(dirname "$0")/.."
# --pg: afterwards, the PostgreSQL scenarios of bench/pg.sh (one and three instances, and the
# cross-instance delivery latency), with their own baseline and SQLite references.
with_pg=0
if [ "${1:-}" = --pg ]; then
  with_pg=1
  shift
  [ -f bench/pg.sh ] || { echo "bench/pg.sh is not in this tree" >&2; exit 2; }
fi
root=$(pwd)

if [ "${BENCH_SMOKE:-0}" = 1 ]; then
  # Only that the harness still works: short, small, and without a release build.
  : "${BENCH_DURATION:=1}" "${BENCH_WARMUP:=0}" "${BENCH_CONNS:=8}" "${BENCH_ROWS:=0}" "${BENCH_SUBSCRIBERS:=10}"
  : "${BENCH_PROFILE:=debug}"
fi
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
conns=${BENCH_CONNS:-256}
threads=${BENCH_THREADS:-1}
rows=${BENCH_ROWS:-10000000}
batch_size=${BENCH_BATCH:-50}
subscribers=${BENCH_SUBSCRIBERS:-100}
profile=${BENCH_PROFILE:-release}

# --- tools -----------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v curl >/dev/null 2>&1 || need+=(curl)
source scripts/lib/debian-packages.sh
install_missing_packages "${need[@]}"

# oha (crates.io) for the open-loop scenario: wrk2 is not in Debian. Installed under the clone
# (.tools/cargo, gitignored) the first time, under nice so that it does not disturb measurements
# running beside it; pinned, so every run uses the same tool. With the system's OpenSSL
# (native-tls): oha 1.16 does not build without a TLS feature, and its default (rustls with
# aws-lc) compiles a large C library.
OHA_VERSION=1.16.0
oha_bin="$root/.tools/cargo/bin/oha"
open_loop=${BENCH_OPEN_LOOP:-1}
[ "${BENCH_SMOKE:-0}" = 1 ] && [ -z "${BENCH_OPEN_LOOP:-}" ] && open_loop=installed
install_oha() {
  if "$oha_bin" --version 2>/dev/null | grep -qF "$OHA_VERSION"; then return 0; fi
  # CI's smoke run does not pay minutes of build for it; it uses oha when it is already there.
  [ "$open_loop" = 1 ] || return 1
  if ! pkg-config --exists openssl 2>/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >&2
  fi
  echo "installing oha $OHA_VERSION into .tools/cargo (once)..." >&2
  nice -n 19 cargo install --locked --no-default-features --features native-tls "oha@$OHA_VERSION" \
    --root "$root/.tools/cargo" >&2
}
if [ "$open_loop" != 0 ] && install_oha && command -v jq >/dev/null 2>&1; then
  open_loop=1
else
  [ "$open_loop" = 1 ] && echo "warning: oha $OHA_VERSION or jq missing: no open-loop scenario (goal 2)" >&2
  open_loop=0
fi

if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
  : # BENCH_NO_BUILD=1: measure what is built already (with BENCH_BIN, while the tree changes)
elif [ "$profile" = release ]; then
  echo "building ($profile)..." >&2
  cargo build --release --locked --bin imnotify --example baseline >&2
else
  echo "building ($profile)..." >&2
  cargo build --locked --bin imnotify --example baseline >&2
fi
# BENCH_BIN: benchmark another imnotify build (an A/B comparison) against the same baseline.
bin=${BENCH_BIN:-"$root/target/$profile/imnotify"}
bin_b=${BENCH_BIN_B:-}
baseline_bin="$root/target/$profile/examples/baseline"
clk_tck=$(getconf CLK_TCK)

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

# The server's user+sys CPU time so far, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the name in field 2 has no spaces here).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# wrk with one of the scripts; prints the script's BENCH line with the CPU ticks the server
# ($measured_pid) spent meanwhile. DRIVE_CONNS overrides the connection count.
drive() { # url script [delay_ms] [duration]
  local t0 line
  t0=$(cpu_ticks "$measured_pid")
  line=$(BENCH_HOOK=$hook BENCH_DELAY_MS=${3:-0} "${on_load[@]}" \
    wrk -t"$threads" -c"${DRIVE_CONNS:-$conns}" -d"${4:-$duration}s" --timeout 10s -s "$root/bench/$2" "$1" \
    | grep '^BENCH ')
  echo "$line cpu_ticks=$(($(cpu_ticks "$measured_pid") - t0))"
}
warm() { if [ "$warmup" != 0 ]; then drive "$1" "$2" 0 "$warmup" >/dev/null; fi; }
field() { sed -E "s/.* $2=([0-9]+).*/\1/" <<<"$1"; }
rps() { awk -v r="$(field "$1" requests)" -v d="$(field "$1" duration_us)" 'BEGIN { printf "%.0f", r / (d / 1e6) }'; }
# Server CPU microseconds per request.
cpu_us() { awk -v t="$(field "$1" cpu_ticks)" -v r="$(field "$1" requests)" -v hz="$clk_tck" 'BEGIN { printf "%.1f", r ? t * 1e6 / hz / r : 0 }'; }
ms() { awk -v us="$(field "$1" "$2")" 'BEGIN { printf "%.2f", us / 1000 }'; }
check_ok() {
  if [ "$(field "$1" non2xx)" != 0 ] || [ "$(field "$1" sockerr)" != 0 ]; then
    echo "warning: $2: $(field "$1" non2xx) non-2xx answers, $(field "$1" sockerr) socket errors" >&2
  fi
}

serve_args=()
if "$bin" serve --help | grep -q -- '--no-limits'; then serve_args+=(--no-limits); fi

# Starts imnotify ($server_bin, default $bin) on $1 (data dir), with the environment in
# $server_env; sets $server_pid, $measured_pid, $url; on a fresh dir also $hook.
server_env=()
start_imnotify() {
  local log="$work/imnotify.$(basename "$1").log"
  # The filler rows are dated in the past and a tenth belong to user 1: retention and the
  # per-recipient cap would remove them during the measurement, and quick_check would read
  # gigabytes before the start.
  env IMNOTIFY_RETENTION__DAYS=0 IMNOTIFY_LIMITS__MAX_NOTIFICATIONS_PER_USER=0 IMNOTIFY_STORAGE__QUICK_CHECK=false \
  IMNOTIFY_LOG__FORMAT=json "${server_env[@]}" "${on_server[@]}" "${server_bin:-$bin}" serve --listen 127.0.0.1:0 --data-dir "$1" \
    "${serve_args[@]}" >"$log.out" 2>>"$log" &
  server_pid=$!
  measured_pid=$server_pid
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
measured_pid=$base_pid
pids+=("$base_pid")
for _ in $(seq 100); do grep -qs '^listening on ' "$work/baseline.out" && break; sleep 0.1; done
base_url="http://$(sed -n 's/^listening on //p' "$work/baseline.out")"
echo "baseline: warm-up, then ${duration}s..." >&2
warm "$base_url" notify.lua
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
warm "$url" notify.lua
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

# Goal 2, open loop: oha sends at a fixed rate whatever the answers do, and with
# --latency-correction times each request from when the schedule said it was due, so a stall
# counts for every request that should have gone out during it. oha sends one Content-Type per
# run, so the bodies are the JSON half of bench/notify.lua's mix (plain, and ATTACH with a TAG
# of 16 that replaces), chosen at random per request; the form half is left out.
if [ "$open_loop" = 1 ]; then
  bodies="$work/bodies.jsonl"
  for i in $(seq 64); do
    if [ $((i % 2)) = 0 ]; then
      printf '{"USER_ID":1,"MESSAGE":"Build #%d of [b]imnotify[/b] finished in 42 s","MESSAGE_OUT":"Build #%d finished"}\n' "$i" "$i"
    else
      t=$((i % 16))
      printf '{"USER_ID":1,"MESSAGE":"Deploy #%d needs approval","CLIENT_ID":"bench","TAG":"DEPLOY_%d","SUB_TAG":"DEPLOY|%d","ATTACH":{"ID":1,"COLOR":"#29619b","BLOCKS":[{"MESSAGE":"API v2 is [b]ready[/b] for production"},{"LINK":{"NAME":"Pipeline %d","LINK":"https://ci.example.com/p/%d"}},{"DELIMITER":{"SIZE":200,"COLOR":"#c2c2c2"}},{"GRID":[{"NAME":"Branch","VALUE":"main","DISPLAY":"LINE","WIDTH":120},{"NAME":"Commit","VALUE":"4e05d4f","DISPLAY":"LINE"}]}]}}\n' "$i" "$t" "$t" "$i" "$i"
    fi
  done >"$bodies"
  open_rate=$((half_target > 0 ? half_target : 1))
  echo "imnotify (open loop, $open_rate req/s offered by oha): ${duration}s..." >&2
  t0=$(cpu_ticks "$measured_pid")
  # -w: requests still out at the deadline are waited for and counted, not dropped.
  "${on_load[@]}" "$oha_bin" --no-tui --output-format json -z "${duration}s" -w -q "$open_rate" \
    --latency-correction -c "$conns" -m POST -T application/json -A application/json -Z "$bodies" \
    "$url${hook}im.notify.system.add.json" >"$work/open.json"
  open_ticks=$(($(cpu_ticks "$measured_pid") - t0))
  # The BENCH line the wrk scripts print, from oha's summary (seconds to microseconds).
  open=$(jq -r --arg d "$duration" --arg t "$open_ticks" '
    def us: . * 1e6 | floor;
    ([.statusCodeDistribution | to_entries[] | .value] | add // 0) as $answered
    | ([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0) as $non2xx
    | ([.errorDistribution | to_entries[] | .value] | add // 0) as $errors
    | "BENCH requests=\($answered) duration_us=\(.summary.total | us) p50_us=\(.latencyPercentiles.p50 | us)"
      + " p99_us=\(.latencyPercentiles.p99 | us) p999_us=\(.latencyPercentiles["p99.9"] | us)"
      + " max_us=\(.summary.slowest | us) non2xx=\($non2xx) sockerr=\($errors) cpu_ticks=\($t)"' "$work/open.json")
  check_ok "$open" "open loop"
  open_rps=$(rps "$open")
fi

get_supported=0
probe=$(curl -s "$url${hook}im.notify.get.json")
if ! grep -q ERROR_METHOD_NOT_FOUND <<<"$probe"; then get_supported=1; fi
if [ "$get_supported" = 1 ]; then
  get_empty=$(BENCH_QUERY="im.notify.get.json" drive "$url" get.lua)
fi
peak_kb=$(rss_kb "$server_pid" VmHWM)
after_kb=$(rss_kb "$server_pid" VmRSS)

# Goal 4: one connection, so each latency is that of the request alone on an idle server.
batch_secs=$(( (duration + 1) / 2 ))
echo "imnotify (one connection: single add, then batch of $batch_size): 2 x ${batch_secs}s..." >&2
single=$(DRIVE_CONNS=1 drive "$url" notify.lua 0 "$batch_secs")
check_ok "$single" single
batched=$(DRIVE_CONNS=1 BENCH_BATCH=$batch_size drive "$url" batch.lua 0 "$batch_secs")
check_ok "$batched" batch
stop_imnotify

# Goal 4 again with the default operating-time limit (on unless --no-limits): the batch's run of
# adds is stored with one store call only while its pending charges cannot cross the limit
# (methods::batch). The rate limit stays off: at its default 2/s, a closed loop is refused
# within a second.
rm -rf "$work/data/oplimit"
saved_args=("${serve_args[@]}")
serve_args=()
server_env=(IMNOTIFY_LIMITS__RATE__ENABLED=false)
start_imnotify "$work/data/oplimit"
server_env=()
serve_args=("${saved_args[@]}")
echo "imnotify with the operating limit (one connection: single add, then batch of $batch_size): 2 x ${batch_secs}s..." >&2
single_op=$(DRIVE_CONNS=1 drive "$url" notify.lua 0 "$batch_secs")
check_ok "$single_op" "single (operating limit)"
batched_op=$(DRIVE_CONNS=1 BENCH_BATCH=$batch_size drive "$url" batch.lua 0 "$batch_secs")
check_ok "$batched_op" "batch (operating limit)"
stop_imnotify

# Issue 16: what the request journal costs, against the same server with it off.
rm -rf "$work/data/nojournal"
server_env=(IMNOTIFY_JOURNAL__CAPACITY=0)
start_imnotify "$work/data/nojournal"
server_env=()
echo "imnotify (journal off): warm-up, then ${duration}s..." >&2
warm "$url" notify.lua
nojournal=$(drive "$url" notify.lua)
check_ok "$nojournal" nojournal
stop_imnotify

# Goal 5: the "empty" scenario with SSE streams of the recipient open and drained. Each stream
# is a curl on the load CPUs (so wrk shares them with the readers, as a real deployment's
# clients would); the server's metrics say how many events went out per add, and whether any
# stream fell behind (dropped subscribers resume from the log).
metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m { v = $2 } END { printf "%.0f\n", v + 0 }'; }
if [ "$subscribers" -gt 0 ]; then
  rm -rf "$work/data/sse"
  server_env=(IMNOTIFY_EVENTS__MAX_STREAMS_PER_USER=$((subscribers * 2)) IMNOTIFY_EVENTS__MAX_STREAMS=$((subscribers * 2 + 100)))
  start_imnotify "$work/data/sse"
  server_env=()
  sse_pids=()
  for _ in $(seq "$subscribers"); do
    "${on_load[@]}" curl -sN -o /dev/null "$url${hook}events" &
    sse_pids+=($!)
    pids+=($!)
  done
  for _ in $(seq 100); do
    [ "$(metric imnotify_event_streams)" -ge "$subscribers" ] && break
    sleep 0.1
  done
  sse_open=$(metric imnotify_event_streams)
  echo "imnotify ($sse_open SSE subscribers): warm-up, then ${duration}s..." >&2
  warm "$url" notify.lua
  sent0=$(metric imnotify_sse_events_sent_total)
  dropped0=$(metric imnotify_hub_subscribers_dropped_total)
  sse=$(drive "$url" notify.lua)
  check_ok "$sse" sse
  sse_rps=$(rps "$sse")
  sleep 0.5
  sse_sent=$(($(metric imnotify_sse_events_sent_total) - sent0))
  sse_dropped=$(($(metric imnotify_hub_subscribers_dropped_total) - dropped0))
  for p in "${sse_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_imnotify
fi

# BENCH_BIN_B: the "empty" scenario once more with another build, for an A/B in one run.
if [ -n "$bin_b" ]; then
  rm -rf "$work/data/b"
  server_bin=$bin_b
  start_imnotify "$work/data/b"
  unset server_bin
  echo "imnotify B ($bin_b): warm-up, then ${duration}s..." >&2
  warm "$url" notify.lua
  empty_b=$(drive "$url" notify.lua)
  check_ok "$empty_b" "empty (B)"
  single_b=$(DRIVE_CONNS=1 drive "$url" notify.lua 0 "$batch_secs")
  batched_b=$(DRIVE_CONNS=1 BENCH_BATCH=$batch_size drive "$url" batch.lua 0 "$batch_secs")
  stop_imnotify
fi

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
  warm "$url" notify.lua
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
row() { # label result [vs-baseline]
  echo "| $1 | $(rps "$2") | ${3:-$(ratio "$(rps "$2")" "$base_rps")} | $(ms "$2" p50_us) | $(ms "$2" p99_us) | $(cpu_us "$2") |"
}
{
  echo "## Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "wrk -t$threads -c$conns -d${duration}s (after ${warmup}s warm-up), server on CPUs $server_cpus, wrk on CPUs $load_cpus;" \
    "bodies from bench/notify.lua; answer size $answer_bytes bytes; serve args: ${serve_args[*]:-none};" \
    "one 4 KiB write+fsync (dd oflag=dsync) on the data dir's disk: $fsync_ms ms; $profile build"
  echo
  echo "| scenario | req/s | vs baseline | p50 ms | p99 ms | server CPU µs/req |"
  echo "|---|---|---|---|---|---|"
  row "baseline (hyper, fixed answer)" "$base" 100%
  row "imnotify, empty db" "$empty"
  if [ -n "$bin_b" ]; then row "B ($(basename "$bin_b")): imnotify, empty db" "$empty_b"; fi
  row "imnotify, journal off (journal.capacity = 0)" "$nojournal"
  row "imnotify, ~half load (${half_delay} ms think time)" "$half"
  if [ "$open_loop" = 1 ]; then
    row "imnotify, open loop at $open_rate req/s (oha -q, latency-corrected; p99.9 $(ms "$open" p999_us) ms)" "$open"
  fi
  if [ "$subscribers" -gt 0 ]; then
    row "imnotify, empty db, $sse_open SSE subscribers of the recipient" "$sse"
  fi
  row "one connection: single add" "$single" -
  row "one connection: batch of $batch_size adds" "$batched" -
  row "operating limit on: one connection: single add" "$single_op" -
  row "operating limit on: one connection: batch of $batch_size adds" "$batched_op" -
  if [ -n "$bin_b" ]; then
    row "B: one connection: single add" "$single_b" -
    row "B: one connection: batch of $batch_size adds" "$batched_b" -
  fi
  if [ "$rows" -gt 0 ]; then
    row "imnotify, $rows rows (${db_mb} MB, filled in ${fill_secs}s)" "$large"
  fi
  if [ "$get_supported" = 1 ]; then
    row "im.notify.get, empty db" "$get_empty"
    if [ "$rows" -gt 0 ]; then
      row "im.notify.get, $rows rows ($((rows / 10)) of user 1)" "$get_large"
    fi
  fi
  echo
  echo "RSS: idle $(mb "$idle_kb") MB, peak (VmHWM) $(mb "$peak_kb") MB, after load $(mb "$after_kb") MB${large_peak_kb:+, peak with $rows rows $(mb "$large_peak_kb") MB}"
  echo
  echo "| goal (issue 15) | measured | verdict |"
  echo "|---|---|---|"
  errors=$(( $(field "$empty" non2xx) + $(field "$empty" sockerr) ))
  echo "| 1. durable add >= 50% of baseline at $conns connections, errors < 1% | $(ratio "$empty_rps" "$base_rps"), $errors errors | $(verdict "$empty_rps >= $base_rps / 2 && $errors * 100 < $(field "$empty" requests)") |"
  if [ "$open_loop" = 1 ]; then
    echo "| 2. p99 <= 5 ms at half of peak, open loop ($open_rate req/s offered by oha $OHA_VERSION -q --latency-correction, $open_rps answered; log at info) | p50 $(ms "$open" p50_us), p99 $(ms "$open" p99_us), p99.9 $(ms "$open" p999_us) ms; $(( $(field "$open" non2xx) + $(field "$open" sockerr) )) errors | $(verdict "$(field "$open" p99_us) <= 5000") |"
  else
    echo "| 2. p99 <= 5 ms at ~half of peak ($half_rps req/s offered by think time, closed loop: no oha) | $(ms "$half" p99_us) ms | $(verdict "$(field "$half" p99_us) <= 5000") |"
  fi
  if [ "$get_supported" = 1 ] && [ "$rows" -gt 0 ]; then
    echo "| 3. im.notify.get >= 35% of baseline (user 1 has $((rows / 10)) notifications) | $(ratio "$(rps "$get_large")" "$base_rps") | $(verdict "$(rps "$get_large") >= $base_rps * 0.35") |"
  elif [ "$get_supported" = 1 ]; then
    echo "| 3. im.notify.get >= 35% of baseline (empty db only: BENCH_ROWS=0) | $(ratio "$(rps "$get_empty")" "$base_rps") | $(verdict "$(rps "$get_empty") >= $base_rps * 0.35") |"
  else
    echo "| 3. im.notify.get >= 35% of baseline | not implemented in this build | - |"
  fi
  echo "| 4. batch of $batch_size adds within 4x one add (p50, one connection, --no-limits) | $(ms "$batched" p50_us) ms vs $(ms "$single" p50_us) ms: $(awk -v b="$(field "$batched" p50_us)" -v s="$(field "$single" p50_us)" 'BEGIN { printf "%.1fx", b / s }') | $(verdict "$(field "$batched" p50_us) <= 4 * $(field "$single" p50_us)") |"
  echo "| 4. the same with the default operating-time limit on (rate limit off) | $(ms "$batched_op" p50_us) ms vs $(ms "$single_op" p50_us) ms: $(awk -v b="$(field "$batched_op" p50_us)" -v s="$(field "$single_op" p50_us)" 'BEGIN { printf "%.1fx", b / s }') | $(verdict "$(field "$batched_op" p50_us) <= 4 * $(field "$single_op" p50_us)") |"
  if [ "$subscribers" -gt 0 ]; then
    echo "| 5. add throughput with $sse_open SSE subscribers >= 90% of none | $(ratio "$sse_rps" "$empty_rps") of none; $(cpu_us "$sse") vs $(cpu_us "$empty") µs CPU per add; $(awk -v s="$sse_sent" -v r="$(field "$sse" requests)" 'BEGIN { printf "%.1f", r ? s / r : 0 }') events sent per add (a TAG replace adds a notifyDelete), $sse_dropped subscribers dropped | $(verdict "$sse_rps >= $empty_rps * 0.9 && $sse_open >= $subscribers") |"
  else
    echo "| 5. add throughput with SSE subscribers >= 90% of none | not run (BENCH_SUBSCRIBERS=0) | - |"
  fi
  if [ "$rows" -gt 0 ]; then
    echo "| 6. throughput with $rows rows within 15% of empty | $(ratio "$large_rps" "$empty_rps") of empty | $(verdict "$large_rps >= $empty_rps * 0.85") |"
  else
    echo "| 6. throughput with many rows within 15% of empty | not run (BENCH_ROWS=0) | - |"
  fi
  echo "| 6. idle RSS < 30 MB | $(mb "$idle_kb") MB | $(verdict "$idle_kb < 30 * 1024") |"
  echo "| 6. peak RSS < 150 MB | $(mb "${large_peak_kb:-$peak_kb}") MB | $(verdict "${large_peak_kb:-$peak_kb} < 150 * 1024 && $peak_kb < 150 * 1024") |"
  echo "| 7. server CPU per durable add | $(cpu_us "$empty") µs (baseline $(cpu_us "$base") µs) | - |"
  echo "| journal cost (issue 16) < 5% CPU per add | $(awk -v a="$(cpu_us "$empty")" -v b="$(cpu_us "$nojournal")" 'BEGIN { printf "%+.1f%%", b ? 100 * (a / b - 1) : 0 }') ($(cpu_us "$empty") vs $(cpu_us "$nojournal") µs) | $(verdict "$(cpu_us "$empty") <= 1.05 * $(cpu_us "$nojournal")") |"
} | tee "$out"
echo "report: $out" >&2
if [ "$with_pg" = 1 ]; then
  BENCH_BIN=$bin bash "$root/bench/pg.sh"
fi
