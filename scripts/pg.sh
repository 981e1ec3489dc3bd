#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (issue 14): `start` installs Debian's postgresql
# when it is missing (as root, like scripts/test.sh), creates a cluster in a temp directory with
# initdb and starts it with pg_ctl as a non-root user (PostgreSQL refuses to run as root),
# listening on 127.0.0.1 only, fsync on, and prints its URL; `url` prints the URL; `restart
# [DOWNTIME]` stops it, waits DOWNTIME seconds and starts it again on the same data; `stop`
# stops it and removes the directory.
#
# For the harnesses outside nextest (interop, push&pull, browser, crash test), which take the
# cluster's URL from IMNOTIFY_TEST_PG as tests/common does: `newdb SERVER_URL [PREFIX]` creates a
# fresh database there and prints its URL (one per test server, so runs cannot see each other's
# rows); `sql DATABASE_URL STATEMENTS` runs statements with psql and prints their rows,
# one a line, columns separated by `|`; `copydb DATABASE_URL` copies a database nobody is
# connected to (CREATE DATABASE ... TEMPLATE) and prints the copy's URL. The databases go with
# the cluster on `stop`.
#
# Environment: IMNOTIFY_PG_DIR (default /tmp/imnotify-pg), IMNOTIFY_PG_PORT (default 55432),
# IMNOTIFY_PG_USER (the system user that runs it when started as root; default imnotify-pg).
set -euo pipefail

dir=${IMNOTIFY_PG_DIR:-/tmp/imnotify-pg}
port=${IMNOTIFY_PG_PORT:-55432}
os_user=${IMNOTIFY_PG_USER:-imnotify-pg}
url="postgres://imnotify@127.0.0.1:$port/postgres"

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# Runs a command as the cluster's owner: the system user when we are root, ourselves otherwise.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$os_user" -- "$@"
  else
    "$@"
  fi
}

start() {
  if [ -z "$(bindir)" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "pg.sh: PostgreSQL is not installed (run as root to install Debian's postgresql)" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local bin
  bin=$(bindir)
  if [ "$(id -u)" = 0 ] && ! id "$os_user" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$os_user"
  fi
  if [ -f "$dir/data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    echo "$url"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown "$os_user" "$dir"
  chmod 700 "$dir"
  as_owner "$bin/initdb" -D "$dir/data" -U imnotify --auth=trust --encoding=UTF8 --locale=C \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  launch "$bin"
  echo "$url"
}

# Starts the server on the existing data directory.
launch() {
  # Many test servers run at once, each with a pool of up to 16 connections and one LISTEN
  # connection: max_connections is raised accordingly. fsync and synchronous_commit stay on, as
  # in production, so the tests measure durable commits.
  as_owner "$1/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=600 -c shared_buffers=64MB" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
}

# Stops the running server (fast: open transactions are rolled back), keeps it down for
# DOWNTIME seconds (default 0), and starts it again on the same data: an outage of the
# database that loses nothing committed (tests/cluster.rs).
restart() {
  local bin
  bin=$(bindir)
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
  sleep "${1:-0}"
  launch "$bin"
}

stop() {
  local bin
  bin=$(bindir) || true
  if [ -n "$bin" ] && [ -d "$dir/data" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

# psql of the installed PostgreSQL; -X ignores any ~/.psqlrc, ON_ERROR_STOP makes a failed
# statement a non-zero exit.
psql_run() {
  local bin
  bin=$(bindir) || { echo "pg.sh: PostgreSQL is not installed" >&2; exit 1; }
  "$bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$@"
}

# The URL of database NAME on the server of URL (its last path segment replaced).
db_url() { echo "${1%/*}/$2"; }

newdb() {
  local server=${1:?newdb SERVER_URL [PREFIX]} name
  name="${2:-imnotify}_$$_$(date +%s%N | tail -c 10)_$RANDOM"
  psql_run -d "$server" -c "CREATE DATABASE $name" >/dev/null
  db_url "$server" "$name"
}

copydb() {
  local from=${1:?copydb DATABASE_URL} name
  name="${from##*/}_copy_$RANDOM"
  psql_run -d "$from" -c "CREATE DATABASE $name TEMPLATE ${from##*/}" >/dev/null
  db_url "$from" "$name"
}

case "${1:-}" in
  start) start ;;
  newdb) newdb "${2:-}" "${3:-}" ;;
  copydb) copydb "${2:-}" ;;
  sql) psql_run -d "${2:?sql DATABASE_URL STATEMENTS}" -c "${3:?sql DATABASE_URL STATEMENTS}" ;;
  stop) stop ;;
  restart) restart "${2:-0}" ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|restart [DOWNTIME]|url|newdb SERVER_URL [PREFIX]|copydb URL|sql URL SQL" >&2; exit 2 ;;
esac
