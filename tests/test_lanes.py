"""Test lanes (tests/helpers/lanes.py): infrastructure markers come from the fixtures a test uses, a test reaching
infrastructure without its marker fails loudly, missing infrastructure is a failure (never a skip), and the quick
lane deselects by marker."""
from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.helpers.lanes import INFRASTRUCTURE, QUICK_LANE

REPO = Path(__file__).resolve().parents[1]

INNER_CONFTEST = '''
import pytest

from tests.helpers.lanes import require_env

pytest_plugins = ("tests.helpers.lanes",)


@pytest.fixture
def postgres_url():  # stands in for tests/audit/conftest.py's
    return require_env("CDS_TEST_POSTGRES_URL", "start PostgreSQL")


@pytest.fixture
def fhir_base():  # stands in for tests/integration/conftest.py's
    return require_env("CDS_TEST_FHIR_BASE", "start the FHIR server")


@pytest.fixture
def loaded(fhir_base):
    return fhir_base
'''

INNER_TESTS = '''
import os

import pytest

from tests.helpers.lanes import require_env


def test_database(postgres_url):
    assert postgres_url


def test_scenarios_loaded(loaded):  # the marker follows the fixture through another fixture
    assert loaded


def test_nothing_needed():  # in every lane; the infrastructure it is not marked for is withheld from it
    assert "CDS_TEST_POSTGRES_URL" not in os.environ and "CDS_TEST_FHIR_BASE" not in os.environ


def test_reads_postgres_without_its_marker():
    require_env("CDS_TEST_POSTGRES_URL", "start PostgreSQL")


@pytest.mark.postgres
def test_reads_postgres_with_its_marker():
    assert require_env("CDS_TEST_POSTGRES_URL", "start PostgreSQL")


def test_chromium_is_withheld_without_the_browser_marker():
    assert os.environ["CDS_TEST_CHROMIUM"] == os.environ["CDS_TEST_CHROMEDRIVER"] == INFRASTRUCTURE_STAND_IN
'''


@pytest.fixture
def inner(pytester, monkeypatch):
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_TESTS.replace("INFRASTRUCTURE_STAND_IN", repr(INFRASTRUCTURE["browser"].stand_in)))
    return pytester


@pytest.fixture
def infrastructure_env(monkeypatch):
    monkeypatch.setenv("CDS_TEST_POSTGRES_URL", "postgresql+psycopg://cds@127.0.0.1:1/audit")
    monkeypatch.setenv("CDS_TEST_FHIR_BASE", "http://127.0.0.1:1/fhir")
    monkeypatch.setenv("CDS_TEST_CHROMIUM", "/usr/bin/chromium")
    monkeypatch.setenv("CDS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")


def test_fixtures_mark_their_tests_and_the_quick_lane_deselects_them(inner, infrastructure_env):
    result = inner.runpytest("-p", "no:cacheprovider", "-m", QUICK_LANE)
    result.assert_outcomes(passed=2, failed=1, deselected=3)
    result.stdout.fnmatch_lines(["*CDS_TEST_POSTGRES_URL is withheld from this test: it is not marked `postgres`*"])


def test_a_forgotten_marker_fails_in_the_full_suite_too(inner, infrastructure_env):
    result = inner.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_inner.py::test_reads_postgres_without_its_marker*"])


def test_missing_infrastructure_fails_and_never_skips(inner, monkeypatch):
    for name in ("CDS_TEST_POSTGRES_URL", "CDS_TEST_FHIR_BASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2, errors=2)
    result.stdout.fnmatch_lines(["*CDS_TEST_POSTGRES_URL is not set: start PostgreSQL*",
                                 "*CDS_TEST_FHIR_BASE is not set: start the FHIR server*"], consecutive=False)


def test_the_infrastructure_fixtures_exist_under_their_names():
    """The names INFRASTRUCTURE marks by are the suite's real fixtures (a rename would silently unmark tests)."""
    fixtures = set()
    for conftest in (REPO / "tests").rglob("conftest.py"):
        for node in ast.walk(ast.parse(conftest.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list):
                fixtures.add(node.name)
    for marker, infra in INFRASTRUCTURE.items():
        assert infra.fixtures <= fixtures, f"{marker}: no fixture named {sorted(infra.fixtures - fixtures)}"


def test_no_test_skips_or_expects_failure():
    """Missing infrastructure is a failure: no skip, skipif, importorskip or xfail anywhere in the suite."""
    banned = {"skip", "skipif", "importorskip", "xfail", "skipTest"}
    found = []
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in banned:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
    assert found == []


def test_the_quick_lane_deselects_every_declared_marker():
    """Every marker pyproject.toml declares is infrastructure or slow: the quick lane leaves each one out."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    declared = {line.split(":")[0] for line in config["markers"]}
    assert set(re.findall(r"\bnot (\w+)", QUICK_LANE)) == declared >= set(INFRASTRUCTURE)
    assert "-m" not in config["addopts"].split(), "the default run (CI's) must select every test"


def test_ci_runs_the_full_suite_and_the_quick_lane_reads_its_markers_here():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^bash scripts/test\.sh$", ci, re.M), "CI runs scripts/test.sh without arguments: the full suite"
    script = (REPO / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert "from tests.helpers.lanes import QUICK_LANE" in script


def test_a_test_without_the_processes_marker_cannot_start_one():
    with pytest.raises(pytest.fail.Exception, match="starts a process .* not marked `processes`"):
        subprocess.run(["true"], check=True)
