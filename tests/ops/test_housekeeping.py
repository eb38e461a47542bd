"""Housekeeping: SQLite side files are ignored by git; the test script's long quiet steps say they are running."""
from __future__ import annotations

import subprocess

import pytest

from tests.ops.opskit import REPO

pytestmark = pytest.mark.processes  # git and the scripts as processes


def test_sqlite_side_files_are_ignored(tmp_path):
    names = ["cds-audit.sqlite3", "cds-audit.sqlite3-wal", "cds-audit.sqlite3-shm", "cds-audit.sqlite3-journal",
             "sub/audit.db-wal", "cds-audit.sqlite3.migrate.lock"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=REPO, capture_output=True, text=True)
    assert sorted(done.stdout.split()) == sorted(names)


def test_long_steps_print_progress_and_their_duration():
    script = ('set -euo pipefail; . scripts/progress.sh; CDS_PROGRESS_SECONDS=1 PROGRESS_PREFIX="[t]" '
              'with_progress "nap" sleep 3; with_progress "fails" false || echo "rc=$?"')
    done = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    lines = done.stderr.splitlines()
    assert lines[0] == "[t] nap ..."
    assert sum(ln.startswith("[t] nap: still running (") for ln in lines) >= 2
    assert "[t] nap: done in 3 s" in lines or "[t] nap: done in 4 s" in lines
    assert any(ln.startswith("[progress] fails: FAILED (exit 1) after ") for ln in lines)
    assert done.stdout.strip() == "rc=1"


def test_the_quiet_steps_use_it():
    test_sh = (REPO / "scripts" / "test.sh").read_text()
    fhir_sh = (REPO / "scripts" / "fhir-server.sh").read_text()
    assert 'with_progress "pip install -e \'.[test]\'"' in test_sh and "with_progress \"apt-get install" in test_sh
    assert 'with_progress "pip install sekmet-fhir' in fhir_sh
    assert subprocess.run(["bash", "-n", "scripts/test.sh"], cwd=REPO).returncode == 0
    assert subprocess.run(["bash", "-n", "scripts/fhir-server.sh"], cwd=REPO).returncode == 0
