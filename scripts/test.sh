#!/usr/bin/env bash
# Install everything the test suite needs and run it: THE test command (README, CI's .ci/run).
#
#   bash scripts/test.sh [pytest args...]      e.g. bash scripts/test.sh -x -k prefetch
#   bash scripts/test.sh --quick [pytest args...]
#                the quick lane: no FHIR server, PostgreSQL or chromium (phases apt, compose, fhir and postgres
#                skipped); pytest deselects by marker every test that needs more than Python (-m QUICK_LANE
#                from tests/helpers/lanes.py). CI (.ci/run) always runs the full suite.
#
# Phases (each timed; a summary is printed at the end):
#   1. venv      .venv for the project (created if missing) + pip install -e '.[test]' (says every 15 s that pip still runs)
#                (skipped when pyproject.toml is unchanged since the last install; CDS_TEST_REINSTALL=1 forces it)
#   1b. lint     scripts/lint.sh: ruff and mypy (pyproject.toml config); any finding stops the run here, before the servers
#   2. apt       Debian chromium + chromium-driver when /usr/bin/chromium is missing, docker-compose when a
#                docker-compose.yml exists and docker-compose is missing, postgresql when its binaries are
#                missing and a local PostgreSQL is needed, nginx-light when nginx is missing
#                (CDS_TEST_SKIP_APT=1 skips this phase)
#   3. compose   docker-compose -f docker-compose.yml config -q   (offline validation; only if the file exists)
#   4. fhir      local FHIR server (scripts/fhir-server.sh), unless CDS_TEST_FHIR_BASE is already set
#   5. postgres  throwaway PostgreSQL (scripts/postgres.sh), unless CDS_TEST_POSTGRES_URL is already set
#   6. pytest    .venv/bin/python -m pytest "$@" with CDS_TEST_FHIR_BASE, CDS_TEST_POSTGRES_URL and
#                CDS_TEST_CHROMIUM (=/usr/bin/chromium) exported
# Whatever this script started is stopped on exit, also on failure or interrupt.
# Exit code: pytest's; pytest's 5 ("no tests collected") is turned into 1 with a message.
set -euo pipefail

QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1
PYTHON="${CDS_PYTHON:-python3}"
VENV=".venv"
CACHE_DIR=".cache"
PYTEST_LOG="$CACHE_DIR/pytest-output.log"
APT_LOG="$CACHE_DIR/apt.log"
mkdir -p "$CACHE_DIR"

say() { echo "[test.sh] $*" >&2; }
# with_progress: the long quiet steps (pip) say they are still running
. "$ROOT/scripts/progress.sh"
die() { say "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- timings
PHASES=()
PHASE_NAME=""
PHASE_T0=""
T_ALL0="$EPOCHREALTIME"
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
phase() {   # phase NAME: closes the running phase (if any) and opens NAME
  phase_done
  PHASE_NAME="$1"
  PHASE_T0="$EPOCHREALTIME"
  say "---- $PHASE_NAME"
}
phase_done() {
  if [ -n "$PHASE_NAME" ]; then
    local dt
    dt="$(elapsed "$PHASE_T0")"
    PHASES+=("$(printf '%-10s %8s s' "$PHASE_NAME" "$dt")")
    say "---- $PHASE_NAME done in ${dt} s"
    PHASE_NAME=""
  fi
}

# ---------------------------------------------------------------- cleanup (always)
STARTED_FHIR=0
STARTED_PG=0
FINAL_LINE=""
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  phase_done
  if [ "$STARTED_FHIR" = 1 ] || [ "$STARTED_PG" = 1 ]; then
    local t0="$EPOCHREALTIME"
    [ "$STARTED_FHIR" = 1 ] && bash scripts/fhir-server.sh stop
    [ "$STARTED_PG" = 1 ] && bash scripts/postgres.sh stop
    PHASES+=("$(printf '%-10s %8s s' "teardown" "$(elapsed "$t0")")")
  fi
  {
    echo "[test.sh] phase timings:"
    local p
    for p in "${PHASES[@]}"; do echo "[test.sh]   $p"; done
    echo "[test.sh]   $(printf '%-10s %8s s' total "$(elapsed "$T_ALL0")")"
    echo "[test.sh] exit code $rc"
  } >&2
  # pytest's own closing line goes last, so that whoever reads the end of the log sees it
  [ -n "$FINAL_LINE" ] && echo "$FINAL_LINE"
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted (SIGINT)"; exit 130' INT
trap 'say "terminated (SIGTERM)"; exit 143' TERM

run_as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else die "need root (or sudo) for: $*"
  fi
}

quiet_pip() {
  # run a pip command; show its stderr minus this machine's harmless "Location 'file:///...' is ignored" noise
  local errf rc=0
  errf="$(mktemp)"
  "$@" 2>"$errf" || rc=$?
  grep -v "^WARNING: Location 'file://.*' is ignored" "$errf" >&2 || true
  rm -f "$errf"
  return $rc
}

have_pg_binaries() {
  { command -v pg_ctl && command -v initdb; } >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

say "repo $ROOT; CI=${CI:-}; $("$PYTHON" --version 2>&1); args: $*$([ "$QUICK" = 1 ] && echo ' (quick lane)')"

# ---------------------------------------------------------------- 1. venv
phase venv
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  say "$VENV is broken: recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
[ -f pyproject.toml ] || die "pyproject.toml not found in $ROOT"
STAMP_FILE="$VENV/.cds-test-install-stamp"
STAMP="$( { "$VENV/bin/python" --version 2>&1; cat pyproject.toml; cat setup.cfg setup.py 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)"
if [ "${CDS_TEST_REINSTALL:-0}" != 0 ] || [ ! -f "$STAMP_FILE" ] || [ "$(cat "$STAMP_FILE")" != "$STAMP" ]; then
  say "pip install -e '.[test]' into $VENV"
  rm -f "$STAMP_FILE"
  PROGRESS_PREFIX="[test.sh]" with_progress "pip install -e '.[test]'" quiet_pip "$VENV/bin/python" -m pip install -q -e '.[test]'
  echo "$STAMP" > "$STAMP_FILE"
else
  say "pyproject.toml unchanged since the last install: skipping pip (CDS_TEST_REINSTALL=1 forces it)"
fi
"$VENV/bin/python" -c 'import pytest' || die "pytest is not installed in $VENV (is it in the [test] extra?)"

# ---------------------------------------------------------------- 1b. lint
phase lint
bash scripts/lint.sh || die "lint failed: ruff/mypy findings above (bash scripts/lint.sh runs this check alone)"

# ---------------------------------------------------------------- 2. apt
phase apt
COMPOSE_FILE="docker-compose.yml"
APT_PKGS=()
[ -x /usr/bin/chromium ] || APT_PKGS+=(chromium chromium-driver)
if [ -x /usr/bin/chromium ] && [ ! -x /usr/bin/chromedriver ]; then APT_PKGS+=(chromium-driver); fi
if [ -f "$COMPOSE_FILE" ] && ! command -v docker-compose >/dev/null 2>&1; then APT_PKGS+=(docker-compose); fi
if [ -z "${CDS_TEST_POSTGRES_URL:-}" ] && [ -z "${CDS_PG_BINDIR:-}" ] && ! have_pg_binaries; then APT_PKGS+=(postgresql); fi
[ -x /usr/sbin/nginx ] || APT_PKGS+=(nginx-light)   # the Kubernetes proxy config is run in front of the service
if [ "$QUICK" = 1 ]; then
  say "quick lane: NOT installing anything (no browser, FHIR server or PostgreSQL needed)"
elif [ "${#APT_PKGS[@]}" = 0 ]; then
  say "nothing to install"
elif [ "${CDS_TEST_SKIP_APT:-0}" != 0 ]; then
  say "CDS_TEST_SKIP_APT set: NOT installing ${APT_PKGS[*]}"
else
  command -v apt-get >/dev/null 2>&1 || die "missing ${APT_PKGS[*]} and no apt-get on this machine"
  export DEBIAN_FRONTEND=noninteractive
  APT_OPTS=(-o Acquire::Retries=3 -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
  t0="$EPOCHREALTIME"
  say "apt-get update (log: $APT_LOG)"
  if ! run_as_root apt-get update -q "${APT_OPTS[@]}" > "$APT_LOG" 2>&1; then
    tail -n 20 "$APT_LOG" >&2
    say "apt-get update failed; trying the install with the package lists we have"
  fi
  say "apt-get update took $(elapsed "$t0") s"
  t0="$EPOCHREALTIME"
  say "apt-get install --no-install-recommends ${APT_PKGS[*]}"
  # packaged daemons (nginx, postgresql) must not be started by their install scripts: tests start their own
  OWN_POLICY_RC=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | run_as_root tee /usr/sbin/policy-rc.d >/dev/null && run_as_root chmod 755 /usr/sbin/policy-rc.d
    OWN_POLICY_RC=1
  fi
  APT_RC=0
  apt_install() { run_as_root apt-get install -y -q --no-install-recommends "${APT_OPTS[@]}" "${APT_PKGS[@]}" >> "$APT_LOG" 2>&1; }
  PROGRESS_PREFIX="[test.sh]" with_progress "apt-get install (log: $APT_LOG)" apt_install || APT_RC=$?
  [ "$OWN_POLICY_RC" = 1 ] && run_as_root rm -f /usr/sbin/policy-rc.d
  if [ "$APT_RC" != 0 ]; then
    tail -n 40 "$APT_LOG" >&2
    die "apt-get install ${APT_PKGS[*]} failed (full log: $APT_LOG)"
  fi
  say "apt-get install took $(elapsed "$t0") s"
fi
if [ -x /usr/bin/chromium ]; then
  say "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: version unknown')"
fi

# ---------------------------------------------------------------- 3. compose
if [ -f "$COMPOSE_FILE" ] && [ "$QUICK" = 0 ]; then
  phase compose
  if command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f "$COMPOSE_FILE" config -q || die "docker-compose -f $COMPOSE_FILE config -q failed"
    say "$COMPOSE_FILE is valid ($(docker-compose version --short 2>/dev/null || echo docker-compose))"
  elif [ "${CDS_TEST_SKIP_APT:-0}" != 0 ]; then
    say "docker-compose not installed (CDS_TEST_SKIP_APT): $COMPOSE_FILE NOT validated"
  else
    die "docker-compose not found; cannot validate $COMPOSE_FILE"
  fi
fi

# ---------------------------------------------------------------- 4. FHIR server
phase fhir
if [ "$QUICK" = 1 ]; then
  say "quick lane: no FHIR server"
elif [ -n "${CDS_TEST_FHIR_BASE:-}" ]; then
  say "using the external FHIR server CDS_TEST_FHIR_BASE=$CDS_TEST_FHIR_BASE"
else
  STARTED_FHIR=1
  say "starting the local FHIR server (the first run builds its venv, about a minute)"
  CDS_TEST_FHIR_BASE="$(bash scripts/fhir-server.sh start)"
  # the server's SQLite store; its `traffic` table records every inbound request (Authorization redacted)
  CDS_TEST_FHIR_TRAFFIC_DB="$(bash scripts/fhir-server.sh db)"
  export CDS_TEST_FHIR_TRAFFIC_DB
fi
export CDS_TEST_FHIR_BASE

# ---------------------------------------------------------------- 5. PostgreSQL
phase postgres
if [ "$QUICK" = 1 ]; then
  say "quick lane: no PostgreSQL"
elif [ -n "${CDS_TEST_POSTGRES_URL:-}" ]; then
  say "using the external PostgreSQL CDS_TEST_POSTGRES_URL=$CDS_TEST_POSTGRES_URL"
else
  STARTED_PG=1
  CDS_TEST_POSTGRES_URL="$(bash scripts/postgres.sh start)"
fi
export CDS_TEST_POSTGRES_URL

# ---------------------------------------------------------------- 6. pytest
phase pytest
export CDS_TEST_CHROMIUM="${CDS_TEST_CHROMIUM:-/usr/bin/chromium}"
export CDS_TEST_CHROMEDRIVER="${CDS_TEST_CHROMEDRIVER:-/usr/bin/chromedriver}"
say "CDS_TEST_FHIR_BASE=${CDS_TEST_FHIR_BASE:-}"
say "CDS_TEST_POSTGRES_URL=${CDS_TEST_POSTGRES_URL:-}"
say "CDS_TEST_CHROMIUM=$CDS_TEST_CHROMIUM"
LANE=()
if [ "$QUICK" = 1 ]; then
  LANE=(-m "$("$VENV/bin/python" -c 'from tests.helpers.lanes import QUICK_LANE; print(QUICK_LANE)')")
  say "quick lane: deselecting by marker (QUICK_LANE, tests/helpers/lanes.py)"
fi
say ".venv/bin/python -m pytest ${LANE[*]} $*"
set +e
# tee ignores SIGINT so that pytest can still print its summary after a Ctrl-C
"$VENV/bin/python" -m pytest "${LANE[@]}" "$@" 2>&1 | ( trap '' INT; exec tee "$PYTEST_LOG" )
PYTEST_RC=${PIPESTATUS[0]}
set -e
FINAL_LINE="$(grep -v '^[[:space:]]*$' "$PYTEST_LOG" | tail -n 1 || true)"
phase_done
if [ "$PYTEST_RC" = 5 ]; then
  say "ERROR: pytest collected no tests (exit code 5): treating that as a failure"
  exit 1
fi
exit "$PYTEST_RC"
