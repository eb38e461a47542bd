#!/usr/bin/env bash
# The lint gate: ruff over the repository's Python and mypy over cds_service, both configured in pyproject.toml
# ([tool.ruff], [tool.mypy]) and run from .venv (bash scripts/test.sh creates it). scripts/test.sh runs this as
# its `lint` phase, before any server starts.
#
#   bash scripts/lint.sh          prints each finding and the counts; exit 0 only when both counts are 0
#
# ruff checks every Python file under the repository root except what .gitignore and [tool.ruff] exclude
# (.venv, caches, the Alembic migration versions). The formatter (ruff format) is not part of the gate.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV=".venv"
say() { echo "[lint.sh] $*" >&2; }

for tool in ruff mypy; do
  if [ ! -x "$VENV/bin/$tool" ]; then
    say "ERROR: $VENV/bin/$tool not found: install the test extras (bash scripts/test.sh, or $VENV/bin/pip install -e '.[test]')"
    exit 2
  fi
done

# ruff: one line per finding (path:line:col: code message), then the count
RUFF_OUT="$("$VENV/bin/ruff" check --output-format concise --no-fix . 2>&1)"
RUFF_RC=$?
RUFF_N="$(grep -cE '^[^ :]+:[0-9]+:[0-9]+: ' <<<"$RUFF_OUT")"
if [ "$RUFF_RC" != 0 ]; then
  echo "$RUFF_OUT"
  if [ "$RUFF_N" = 0 ]; then   # ruff itself failed (bad configuration, unreadable file): not a clean result
    say "ERROR: ruff exited with $RUFF_RC without reporting findings"
    RUFF_N="?"
  fi
fi
say "ruff: $RUFF_N finding(s) ($("$VENV/bin/ruff" --version))"

# mypy: the files and strictness come from [tool.mypy]; one line per error, then the count
MYPY_OUT="$("$VENV/bin/mypy" 2>&1)"
MYPY_RC=$?
MYPY_N="$(grep -cE '^[^ :]+:[0-9]+: error: ' <<<"$MYPY_OUT")"
if [ "$MYPY_RC" != 0 ]; then
  echo "$MYPY_OUT"
  if [ "$MYPY_N" = 0 ]; then
    say "ERROR: mypy exited with $MYPY_RC without reporting errors"
    MYPY_N="?"
  fi
fi
say "mypy: $MYPY_N error(s) ($(tail -n 1 <<<"$MYPY_OUT"))"

if [ "$RUFF_RC" != 0 ] || [ "$MYPY_RC" != 0 ]; then
  say "FAILED: fix the findings above (ruff check --fix applies ruff's safe fixes)"
  exit 1
fi
say "clean"
