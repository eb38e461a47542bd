# Sourced by scripts/test.sh and scripts/fhir-server.sh (not run on its own).
#
#   with_progress LABEL COMMAND [ARGS...]
#
# Runs COMMAND (a program or a shell function), says on stderr that LABEL started, then every
# CDS_PROGRESS_SECONDS (default 15) seconds that it is still running, and when it ends how long it
# took; returns COMMAND's exit code. For the long quiet steps (pip installs, venv creation).
# PROGRESS_PREFIX (default "[progress]") starts each line.

with_progress() {
  local label="$1"
  shift
  local every="${CDS_PROGRESS_SECONDS:-15}" prefix="${PROGRESS_PREFIX:-[progress]}"
  local t0=$SECONDS next pid rc=0
  echo "$prefix $label ..." >&2
  "$@" &
  pid=$!
  next=$((t0 + every))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ "$SECONDS" -ge "$next" ] && kill -0 "$pid" 2>/dev/null; then
      echo "$prefix $label: still running ($((SECONDS - t0)) s)" >&2
      next=$((next + every))
    fi
  done
  wait "$pid" || rc=$?
  if [ "$rc" = 0 ]; then
    echo "$prefix $label: done in $((SECONDS - t0)) s" >&2
  else
    echo "$prefix $label: FAILED (exit $rc) after $((SECONDS - t0)) s" >&2
  fi
  return "$rc"
}
