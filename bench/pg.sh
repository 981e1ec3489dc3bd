#!/usr/bin/env bash
# PostgreSQL scenarios of the benchmark (issue 14); `bench/run.sh --pg` runs this, or run it
# alone. Every figure is in the same run as its references:
#
#   baseline   examples/baseline.rs (hyper, fixed answer of imnotify's size)
#   sqlite     durable im.notify.system.add on a fresh SQLite data dir
#   pg x1      the same on one instance on PostgreSQL (fsync and synchronous_commit on)
#   pg x3      three instances on one database behind nginx with deploy/nginx.conf
#   latency    cross-instance live delivery: an SSE stream on instance A, 100 adds through
#              instance B, the time from sending each add to its notifyAdd on A (median, worst)
#
# Each throughput row also gives the server CPU time per request (user+system of the imnotify
# processes over the measured interval; PostgreSQL's own is not included), which is steadier
# than req/s on a shared machine.
#
# Settings: BENCH_DURATION (s, 10), BENCH_WARMUP (s, 2), BENCH_CONNS (64), BENCH_BIN (an
# imnotify binary; default target/release/imnotify, built here), IMNOTIFY_TEST_PG (a server
# URL; default: scripts/pg.sh starts one and stops it afterwards), BENCH_OUT (report file).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-2}
conns=${BENCH_CONNS:-64}

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
source scripts/lib/debian-packages.sh
install_missing_packages "${need[@]}"
bash scripts/nginx-deps.sh
if [ -z "${BENCH_BIN:-}" ]; then
  echo "building (release)..." >&2
  cargo build --release --locked --bin imnotify --example baseline >&2
fi
bin=${BENCH_BIN:-"$root/target/release/imnotify"}
baseline_bin="$(dirname "$bin")/examples/baseline"

work=$(mktemp -d -t imnotify-pgbench.XXXXXX)
chmod 755 "$work"
out=${BENCH_OUT:-$work/report.md}
pids=()
started_pg=0
cleanup() {
  if [ -f "$work/nginx/nginx.pid" ]; then kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$started_pg" = 1 ]; then bash scripts/pg.sh stop >/dev/null 2>&1 || true; fi
  rm -rf "$work/data"
}
trap cleanup EXIT

if [ -z "${IMNOTIFY_TEST_PG:-}" ]; then
  IMNOTIFY_TEST_PG=$(bash scripts/pg.sh start | tail -n 1)
  started_pg=1
fi
pg_server=$IMNOTIFY_TEST_PG
db_url() { echo "${pg_server%/*}/$1"; }
psql_cmd() { psql -q -X -d "$pg_server" -c "$1" >/dev/null; }

# CPU seconds (user + system) of processes, from /proc/PID/stat (clock ticks).
tck=$(getconf CLK_TCK)
cpu_of() {
  local total=0 p t
  for p in "$@"; do
    if [ -r "/proc/$p/stat" ]; then
      t=$(awk '{ print $14 + $15 }' "/proc/$p/stat")
      total=$((total + t))
    fi
  done
  echo "$total"
}

drive() { # url [duration]
  BENCH_ROOT=$root BENCH_HOOK=$hook BENCH_DELAY_MS=0 \
    wrk -t1 -c"$conns" -d"${2:-$duration}s" --timeout 10s -s "$root/bench/pg_notify.lua" "$1" |
    grep '^BENCH '
}
field() { sed -E "s/.* $2=([0-9]+).*/\1/" <<<"$1"; }
rps() { awk -v r="$(field "$1" requests)" -v d="$(field "$1" duration_us)" 'BEGIN { printf "%.0f", r / (d / 1e6) }'; }
ms() { awk -v us="$(field "$1" "$2")" 'BEGIN { printf "%.2f", us / 1000 }'; }
errors() { echo "$(field "$1" non2xx) non-2xx, $(field "$1" sockerr) socket errors"; }
# Microseconds of CPU per request: ticks delta, requests.
per_req() { awk -v t="$1" -v hz="$tck" -v n="$2" 'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "-" }'; }

# Starts imnotify; $1 a name, then extra arguments. Sets $server_pid, $url; $hook on first start.
start_imnotify() {
  local name=$1
  shift
  local log="$work/$name.log"
  mkdir -p "$work/data"
  IMNOTIFY_LOG__FORMAT=json "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data/$name" \
    --no-limits "$@" >"$log.out" 2>>"$log" &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 600); do
    grep -qs '^imnotify listening on ' "$log.out" && break
    sleep 0.1
  done
  url=$(sed -n 's/^imnotify listening on //p' "$log.out")
  [ -n "$url" ] || { echo "imnotify did not start: $(cat "$log.out" "$log")" >&2; exit 1; }
  local h
  h=$(sed -n 's/^Webhook: //p' "$log.out")
  if [ -n "$h" ]; then hook=${h#"$url"}; fi
}

# measure NAME URL PIDS...: warm-up, measure; sets $result and $cpu_ticks (of PIDS).
measure() {
  local name=$1 target=$2
  shift 2
  echo "$name: warm-up, then ${duration}s..." >&2
  drive "$target" "$warmup" >/dev/null
  local before
  before=$(cpu_of "$@")
  result=$(drive "$target")
  cpu_ticks=$(($(cpu_of "$@") - before))
}

# --- baseline ------------------------------------------------------------------------------------
start_imnotify probe
answer=$(curl -s -H 'Content-Type: application/json' -d '{"USER_ID":1,"MESSAGE":"size probe"}' \
  "$url${hook}im.notify.system.add.json")
kill "$server_pid"
"$baseline_bin" 127.0.0.1:0 "${#answer}" >"$work/baseline.out" &
base_pid=$!
pids+=("$base_pid")
for _ in $(seq 100); do grep -qs '^listening on ' "$work/baseline.out" && break; sleep 0.1; done
measure baseline "http://$(sed -n 's/^listening on //p' "$work/baseline.out")" "$base_pid"
base=$result
base_cpu=$cpu_ticks
kill "$base_pid"

# --- SQLite --------------------------------------------------------------------------------------
start_imnotify sqlite
measure sqlite "$url" "$server_pid"
sqlite=$result
sqlite_cpu=$cpu_ticks
kill "$server_pid"

# --- PostgreSQL, one instance --------------------------------------------------------------------
db1="imnotify_bench1_$$"
psql_cmd "CREATE DATABASE $db1"
start_imnotify pg1 --database-url "$(db_url "$db1")"
measure "pg x1" "$url" "$server_pid"
pg1=$result
pg1_cpu=$cpu_ticks
kill "$server_pid"

# --- PostgreSQL, three instances behind nginx ---------------------------------------------------
db3="imnotify_bench3_$$"
psql_cmd "CREATE DATABASE $db3"
instances=()
addrs=()
for i in 1 2 3; do
  start_imnotify "pg3-$i" --database-url "$(db_url "$db3")"
  instances+=("$server_pid")
  addrs+=("${url#http://}")
done
nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx/tmp"
awk -v a="${addrs[0]}" -v b="${addrs[1]}" -v c="${addrs[2]}" -v port="$nginx_port" '
  /^ *server 127\.0\.0\.1:808/ { if (!done) { printf "    server %s;\n    server %s;\n    server %s;\n", a, b, c; done = 1 } next }
  /^ *listen 8080;/ { printf "    listen 127.0.0.1:%s;\n", port; next }
  { print }' deploy/nginx.conf >"$work/nginx/imnotify.conf"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  include $work/nginx/imnotify.conf;
}
EOF
if [ "$(id -u)" = 0 ]; then
  chown -R nobody:nogroup "$work/nginx"
  runuser -u nobody -- /usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
else
  /usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
fi
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/healthz" && break; sleep 0.1; done
probe=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"USER_ID":1,"MESSAGE":"probe"}' "http://127.0.0.1:$nginx_port${hook}im.notify.system.add.json")
[ "$probe" = 200 ] || { echo "nginx answered $probe; $(tail -n 5 "$work/nginx/error.log")" >&2; exit 1; }
nginx_pids=$(pgrep -f "nginx.*$work/nginx" | tr '\n' ' ')
# shellcheck disable=SC2086
measure "pg x3 (nginx)" "http://127.0.0.1:$nginx_port" "${instances[@]}"
pg3=$result
pg3_cpu=$cpu_ticks
# shellcheck disable=SC2086
nginx_cpu=$(cpu_of $nginx_pids)

# --- cross-instance live delivery ------------------------------------------------------------------
latency=$(python3 - "${addrs[0]}" "${addrs[1]}" "$hook" <<'PY'
import json, socket, statistics, sys, time
a, b, hook = sys.argv[1], sys.argv[2], sys.argv[3]
def conn(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)))
s = conn(a)
s.sendall(f"GET {hook}events HTTP/1.1\r\nHost: {a}\r\nAccept: text/event-stream\r\n\r\n".encode())
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(65536)
buf = buf.split(b"\r\n\r\n", 1)[1]
samples = []
for i in range(100):
    marker = f"lat-{i}-{time.time_ns()}".encode()
    body = json.dumps({"USER_ID": 1, "MESSAGE": marker.decode()}).encode()
    t0 = time.perf_counter()
    c = conn(b)
    c.sendall(f"POST {hook}im.notify.system.add.json HTTP/1.1\r\nHost: {b}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    while marker not in buf:
        s.settimeout(5)
        buf += s.recv(65536)
    samples.append(time.perf_counter() - t0)
    buf = buf[buf.index(marker):]
    c.close()
print(f"{statistics.median(samples)*1000:.1f} {max(samples)*1000:.1f}")
PY
)
lat_median=${latency% *}
lat_worst=${latency#* }
for p in "${instances[@]}"; do kill "$p" 2>/dev/null || true; done
psql_cmd "DROP DATABASE IF EXISTS $db1 WITH (FORCE)" || true
psql_cmd "DROP DATABASE IF EXISTS $db3 WITH (FORCE)" || true

# --- report ----------------------------------------------------------------------------------------
base_rps=$(rps "$base")
sqlite_rps=$(rps "$sqlite")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
row() { # name result cpu_ticks
  local r
  r=$(rps "$2")
  echo "| $1 | $r | $(ratio "$r" "$base_rps") | $(ratio "$r" "$sqlite_rps") | $(ms "$2" p50_us) | $(ms "$2" p99_us) | $(per_req "$3" "$(field "$2" requests)") | $(errors "$2") |"
}
{
  echo "## PostgreSQL run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "wrk -t1 -c$conns -d${duration}s after ${warmup}s warm-up, bodies from bench/notify.lua, --no-limits;" \
    "PostgreSQL $(psql -X -A -t -d "$pg_server" -c 'SHOW server_version'), fsync $(psql -X -A -t -d "$pg_server" -c 'SHOW fsync'), synchronous_commit $(psql -X -A -t -d "$pg_server" -c 'SHOW synchronous_commit')." \
    "No CPU pinning: everything shares the machine's cores."
  echo
  echo "| scenario | req/s | vs baseline | vs SQLite | p50 ms | p99 ms | imnotify CPU µs/req | errors |"
  echo "|---|---|---|---|---|---|---|---|"
  row "baseline (hyper, fixed answer)" "$base" "$base_cpu"
  row "SQLite, one instance" "$sqlite" "$sqlite_cpu"
  row "PostgreSQL, one instance" "$pg1" "$pg1_cpu"
  row "PostgreSQL, three instances behind nginx" "$pg3" "$pg3_cpu"
  echo
  echo "nginx CPU in the three-instance run: $(per_req "$nginx_cpu" "$(field "$pg3" requests)") µs/req."
  echo "Cross-instance live delivery (SSE on A, add through B, 100 adds): median $lat_median ms, worst $lat_worst ms."
} | tee "$out"
echo "report: $out" >&2
