#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for the tests (audit store).
#
#   bash scripts/postgres.sh start    # fresh cluster + database cds_test; prints the SQLAlchemy URL on stdout
#   bash scripts/postgres.sh stop     # stop it and delete the cluster
#   bash scripts/postgres.sh status   # exit 0 and print the URL if running, exit 1 otherwise
#
# Environment:
#   CDS_TEST_PG_PORT   port on 127.0.0.1 (default 54329)
#   CDS_PG_BINDIR      directory holding initdb/pg_ctl (default: found on PATH or /usr/lib/postgresql/*/bin;
#                      Debian's `postgresql` is apt-installed when neither has them)
#
# The cluster lives in a fresh mktemp directory under ${TMPDIR:-/tmp} (so that the `postgres` user can
# reach it wherever the repo is checked out); its path is recorded in .cache/postgres.dir, and the server
# log is copied to .cache/postgres.log on stop (.cache/postgres-PORT.{dir,log} for a port other than 54329).
# It listens on 127.0.0.1 only (plus a Unix socket inside the cluster directory), with trust
# authentication for the superuser `postgres`.
# initdb/pg_ctl refuse to run as root, so as root they run as the `postgres` user (runuser).
# Informational messages go to stderr; stdout carries only the URL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${CDS_TEST_PG_PORT:-54329}"
HOST="127.0.0.1"
DB="cds_test"
CACHE_DIR=".cache"
# default port: .cache/postgres.{dir,log}; any other port gets its own (postgres-PORT.*), so that
# several clusters in one checkout do not stop each other
if [ "$PORT" = 54329 ]; then NAME="postgres"; else NAME="postgres-$PORT"; fi
STATEFILE="$CACHE_DIR/$NAME.dir"
LOGCOPY="$CACHE_DIR/$NAME.log"
URL="postgresql+psycopg://postgres@$HOST:$PORT/$DB"

log() { echo "[postgres] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

find_bindir() {
  local d
  if [ -n "${CDS_PG_BINDIR:-}" ]; then
    echo "$CDS_PG_BINDIR"; return 0
  fi
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0
  fi
  # Debian keeps the server binaries off PATH; take the newest major version installed
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"; return 0
    fi
  done
  return 1
}

apt_install_postgres() {
  [ "$(id -u)" = "0" ] || die "PostgreSQL server binaries not found and not root: install Debian's postgresql package"
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL server binaries not found and no apt-get"
  local t0=$SECONDS apt_log="$CACHE_DIR/apt-postgres.log"
  mkdir -p "$CACHE_DIR"
  log "initdb/pg_ctl not found: installing Debian postgresql (apt-get update + install --no-install-recommends; log $apt_log)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get update -q -o Acquire::Retries=3 -o DPkg::Lock::Timeout=600 > "$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    log "apt-get update failed; trying the install with the package lists we have"
  fi
  if ! apt-get install -y -q --no-install-recommends -o Acquire::Retries=3 -o DPkg::Lock::Timeout=600 \
      -o Dpkg::Use-Pty=0 postgresql >> "$apt_log" 2>&1; then
    tail -n 40 "$apt_log" >&2
    die "apt-get install postgresql failed (log: $apt_log)"
  fi
  log "postgresql installed in $((SECONDS - t0)) s"
}

BINDIR=""
ensure_bindir() {
  if ! BINDIR="$(find_bindir)"; then
    apt_install_postgres
    BINDIR="$(find_bindir)" || die "postgresql installed but initdb/pg_ctl still not found"
  fi
}

# Run a server-side command as the cluster owner (postgres when we are root), from / so that an
# unreadable current directory does not matter.
as_owner() {
  if [ "$(id -u)" = "0" ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

current_dir() { [ -f "$STATEFILE" ] && cat "$STATEFILE" || true; }

cluster_running() {
  local dir="$1"
  [ -n "$dir" ] && [ -f "$dir/data/PG_VERSION" ] && [ -n "$BINDIR" ] \
    && as_owner "$BINDIR/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

do_stop() {
  local dir
  dir="$(current_dir)"
  if [ -z "$dir" ]; then
    log "not running (no $STATEFILE)"
    return 0
  fi
  find_bindir >/dev/null 2>&1 && BINDIR="$(find_bindir)" || true
  if [ -d "$dir/data" ]; then
    if [ -n "$BINDIR" ] && cluster_running "$dir"; then
      log "stopping cluster in $dir"
      as_owner "$BINDIR/pg_ctl" -D "$dir/data" stop -m fast -w -t 30 >/dev/null 2>&1 || true
    fi
    # belt and braces: a postmaster that survived pg_ctl
    if [ -f "$dir/data/postmaster.pid" ]; then
      local pid
      pid="$(head -n 1 "$dir/data/postmaster.pid" | tr -dc '0-9')"
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        log "postmaster $pid still alive: SIGQUIT"
        kill -QUIT "$pid" 2>/dev/null || true
        sleep 1
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  [ -f "$dir/postgres.log" ] && cp "$dir/postgres.log" "$LOGCOPY" 2>/dev/null || true
  case "$dir" in
    */cds-pg.*) rm -rf "$dir" ;;   # only ever delete a directory this script made
  esac
  rm -f "$STATEFILE"
  log "stopped"
}

do_start() {
  ensure_bindir
  mkdir -p "$CACHE_DIR"
  local old
  old="$(current_dir)"
  if [ -n "$old" ]; then
    log "a previous cluster is recorded ($old): removing it first"
    do_stop
  fi
  if port_in_use; then
    die "port $PORT on $HOST is already in use (set CDS_TEST_PG_PORT to another port)"
  fi
  local t0=$SECONDS dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/cds-pg.XXXXXX")"
  echo "$dir" > "$STATEFILE"
  chmod 755 "$dir"
  if [ "$(id -u)" = "0" ]; then
    id postgres >/dev/null 2>&1 || die "user 'postgres' does not exist (install Debian's postgresql package)"
    chown postgres: "$dir"
  fi
  log "initdb in $dir/data ($BINDIR)"
  if ! as_owner "$BINDIR/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
      > "$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2 || true
    do_stop
    die "initdb failed"
  fi
  local opts="-c listen_addresses=$HOST -c port=$PORT -c unix_socket_directories=$dir"
  opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
  if ! as_owner "$BINDIR/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "$opts" -w -t 60 start >/dev/null; then
    tail -n 40 "$dir/postgres.log" >&2 || true
    do_stop
    die "pg_ctl start failed"
  fi
  local createdb="$BINDIR/createdb"
  [ -x "$createdb" ] || createdb="$(command -v createdb || true)"
  [ -n "$createdb" ] || die "createdb not found"
  if ! "$createdb" -h "$HOST" -p "$PORT" -U postgres "$DB"; then
    do_stop
    die "createdb $DB failed"
  fi
  log "up in $((SECONDS - t0)) s: $HOST:$PORT, database $DB, cluster $dir, log $dir/postgres.log"
  echo "$URL"
}

do_status() {
  local dir
  dir="$(current_dir)"
  BINDIR="$(find_bindir 2>/dev/null || true)"
  if cluster_running "$dir"; then
    log "running: cluster $dir"
    echo "$URL"
    return 0
  fi
  log "not running"
  return 1
}

case "${1:-}" in
  start|restart) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
