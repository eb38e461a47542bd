#!/usr/bin/env bash
# Local FHIR R4 test server (PyPI sekmet-fhir 0.1.1) for the integration tests.
#
#   bash scripts/fhir-server.sh start    # (re)start with a FRESH EMPTY store; prints the base URL on stdout
#   bash scripts/fhir-server.sh stop     # stop it (whole process group)
#   bash scripts/fhir-server.sh status   # exit 0 and print the base URL if running, exit 1 otherwise
#   bash scripts/fhir-server.sh restart  # same as start
#   bash scripts/fhir-server.sh db       # print the path of the SQLite store (its `traffic` table logs requests)
#   bash scripts/fhir-server.sh install  # only create/refresh the venv
#
# Environment:
#   CDS_FHIR_VENV            isolated virtualenv for the server (default .cache/fhir-venv)
#   CDS_TEST_FHIR_PORT       port on 127.0.0.1 (default 8089)
#   CDS_FHIR_START_TIMEOUT   seconds to wait for GET /fhir/metadata == 200 (default 60)
#   CDS_FHIR_BEARER_TOKEN    if set, the server requires "Authorization: Bearer <token>" on every
#                            request except /metadata (default: no auth at all)
#   CDS_PYTHON               interpreter used to create the venv (default python3)
#
# Everything lives under .cache/ (relative to the repo root): the venv, fhir-server.pid,
# fhir-server.log and fhir-server/ (settings.yaml + the SQLite store sekmet.db, wiped on each start);
# for a port other than 8089 those three are named fhir-server-PORT.pid, fhir-server-PORT.log, fhir-server-PORT/.
# Informational messages go to stderr; stdout carries only the base URL (start/status).
# See docs/dev/sekmet-fhir.md for what the server does and does not support.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SEKMET_VERSION="0.1.1"
CONSTRAINTS="ci/fhir-server-constraints.txt"
CACHE_DIR=".cache"
VENV="${CDS_FHIR_VENV:-$CACHE_DIR/fhir-venv}"
PORT="${CDS_TEST_FHIR_PORT:-8089}"
HOST="127.0.0.1"
TIMEOUT="${CDS_FHIR_START_TIMEOUT:-60}"
PYTHON="${CDS_PYTHON:-python3}"
# Default port: .cache/fhir-server{.pid,.log,/}. Any other port gets its own files (fhir-server-PORT...),
# so that several instances in one checkout do not stop each other.
if [ "$PORT" = 8089 ]; then NAME="fhir-server"; else NAME="fhir-server-$PORT"; fi
STATE_DIR="$CACHE_DIR/$NAME"
PIDFILE="$CACHE_DIR/$NAME.pid"
LOG="$CACHE_DIR/$NAME.log"
BASE_URL="http://$HOST:$PORT/fhir"

log() { echo "[fhir-server] $*" >&2; }
# shellcheck source=progress.sh
. "$ROOT/scripts/progress.sh"
die() { log "ERROR: $*"; exit 1; }

abspath() { case "$1" in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }

quiet_pip() {
  # run a pip command; show its stderr minus this machine's harmless "Location 'file:///...' is ignored" noise
  local errf rc=0
  errf="$(mktemp)"
  "$@" 2>"$errf" || rc=$?
  grep -v "^WARNING: Location 'file://.*' is ignored" "$errf" >&2 || true
  rm -f "$errf"
  return $rc
}

# --- isolated venv --------------------------------------------------------------------------------

venv_stamp() {
  # what the venv was built from: version + constraints file content
  { echo "sekmet-fhir==$SEKMET_VERSION"; cat "$CONSTRAINTS"; } | sha256sum | cut -d' ' -f1
}

ensure_venv() {
  [ -f "$CONSTRAINTS" ] || die "$CONSTRAINTS is missing"
  local stamp_file="$VENV/.cds-fhir-stamp" want
  want="$(venv_stamp)"
  if [ -x "$VENV/bin/sekmet" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ] \
      && "$VENV/bin/python" -c 'import sekmet' >/dev/null 2>&1; then
    return 0
  fi
  local t0=$SECONDS
  log "creating isolated venv $VENV (sekmet-fhir==$SEKMET_VERSION, -c $CONSTRAINTS)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PROGRESS_PREFIX="[fhir-server]" with_progress "pip install sekmet-fhir into $VENV" \
    quiet_pip "$VENV/bin/python" -m pip install -q --no-input \
    -c "$CONSTRAINTS" "sekmet-fhir==$SEKMET_VERSION"
  echo "$want" > "$stamp_file"
  log "venv ready in $((SECONDS - t0)) s"
}

# --- process helpers ------------------------------------------------------------------------------

read_pid() { [ -f "$PIDFILE" ] && tr -dc '0-9' < "$PIDFILE" || true; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

http_status() {
  # prints the HTTP status of GET $1 (000 when unreachable); uses the server venv's python, no curl needed
  "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={"Accept": "application/fhir+json"}), timeout=3) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
}

do_stop() {
  local pid
  pid="$(read_pid)"
  if ! pid_alive "$pid"; then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  log "stopping pid $pid (process group)"
  # the server was started with setsid, so its pid is also its process-group id: this gets its children too
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do   # up to 10 s for uvicorn's graceful shutdown
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then
    log "still alive after 10 s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$PIDFILE"
  log "stopped"
}

write_settings() {
  local dir="$1" auth
  if [ -n "${CDS_FHIR_BEARER_TOKEN:-}" ]; then
    auth="server_auth:
  types: [bearer]
  tokens: [\"${CDS_FHIR_BEARER_TOKEN}\"]"
  else
    auth="server_auth:
  types: [none]"
  fi
  cat > "$dir/settings.yaml" <<EOF
# generated by scripts/fhir-server.sh; overwritten on every start
base_url: $BASE_URL            # used for fullUrl, Location and paging links: must match host:port
host: $HOST
port: $PORT
data_dir: $dir/data
db_path: $dir/sekmet.db
own_private_key_path: $dir/keys/sekmet_private.pem
log_inbound: true                # every inbound request is recorded (headers redacted) in sekmet.db, table traffic
simulator:
  enabled: false                 # otherwise an active MedicationRequest gets a MedicationDispense (+ Practitioner, Location) 2 s later
validation:
  inbound: strict                # structural check (fhir.resources R4B models); 400 OperationOutcome on errors
$auth
EOF
}

do_start() {
  ensure_venv
  # fresh store every time: stop our previous instance first
  if pid_alive "$(read_pid)"; then
    log "an instance is already running: restarting it with a fresh store"
    do_stop
  fi
  rm -f "$PIDFILE"
  if port_in_use; then
    die "port $PORT on $HOST is already in use by another process (set CDS_TEST_FHIR_PORT to another port)"
  fi
  local state
  state="$(abspath "$STATE_DIR")"
  rm -rf "$state"
  mkdir -p "$state" "$CACHE_DIR"
  write_settings "$state"
  local venv_abs pidfile_abs
  venv_abs="$(abspath "$VENV")"
  pidfile_abs="$(abspath "$PIDFILE")"
  {
    echo
    echo "===== $(date -u +%Y-%m-%dT%H:%M:%SZ) start sekmet-fhir $SEKMET_VERSION on $BASE_URL ====="
  } >> "$LOG"
  local t0=$SECONDS
  # setsid: own session and process group (pid == pgid), so `stop` can kill the group.
  # The inner shell writes its own pid, then execs the server (same pid).
  # All three std streams are redirected so that no process keeps the caller's stdout/stderr open
  # (a caller doing BASE=$(fhir-server.sh start) would otherwise wait for the server to exit).
  ( cd "$state" && SEKMET_CONFIG="$state/settings.yaml" exec setsid bash -c \
      'echo $$ > "$0"; exec "$1/bin/sekmet" serve --host "$2" --port "$3"' \
      "$pidfile_abs" "$venv_abs" "$HOST" "$PORT" ) < /dev/null >> "$ROOT/$LOG" 2>&1 &
  local pid="" status=000
  for _ in $(seq 1 50); do
    pid="$(read_pid)"
    [ -n "$pid" ] && break
    sleep 0.1
  done
  [ -n "$pid" ] || die "server did not write $PIDFILE; see $LOG"
  local deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! pid_alive "$pid"; then
      tail -n 40 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      die "server process $pid exited during start-up (log: $LOG)"
    fi
    status="$(http_status "$BASE_URL/metadata")"
    [ "$status" = "200" ] && break
    sleep 0.25
  done
  if [ "$status" != "200" ]; then
    tail -n 40 "$LOG" >&2 || true
    do_stop
    die "GET $BASE_URL/metadata did not answer 200 within ${TIMEOUT}s (last status $status; log: $LOG)"
  fi
  log "up in $((SECONDS - t0)) s: pid $pid, base $BASE_URL, store $state/sekmet.db, log $LOG"
  echo "$BASE_URL"
}

do_status() {
  local pid
  pid="$(read_pid)"
  if pid_alive "$pid" && [ -x "$VENV/bin/python" ] && [ "$(http_status "$BASE_URL/metadata")" = "200" ]; then
    log "running: pid $pid"
    echo "$BASE_URL"
    return 0
  fi
  if pid_alive "$pid"; then
    log "pid $pid alive but $BASE_URL/metadata does not answer 200"
  else
    log "not running"
  fi
  return 1
}

case "${1:-}" in
  start|restart) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  install) ensure_venv ;;
  db) echo "$(abspath "$STATE_DIR")/sekmet.db" ;;
  *) echo "usage: $0 start|stop|status|restart|db|install" >&2; exit 2 ;;
esac
