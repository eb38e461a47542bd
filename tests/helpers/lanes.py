"""Test lanes: the markers that keep the quick lane honest, applied from the fixtures a test uses and enforced (a
pytest plugin, loaded by tests/conftest.py).

``integration``, ``postgres`` and ``browser`` say what a test needs besides Python: the real FHIR server, the
PostgreSQL audit database, headless chromium. A test that uses an infrastructure fixture gets the marker
automatically; a test that reaches the infrastructure another way (a subprocess, a direct lookup) carries it
itself. The marker is also the key: a test without it runs with that infrastructure's variables withheld from
the environment, so a forgotten marker fails loudly in the full suite instead of slipping into the quick lane.
Likewise a test not marked ``processes`` cannot start a process, and ``slow`` (by hand) marks the in-process tests
that take a second or more by design.

The quick lane deselects by marker (``QUICK_LANE``, run by ``bash scripts/test.sh --quick``); nothing is ever
skipped for missing infrastructure: in the full suite (and in CI) it is a failure.
"""
from __future__ import annotations

import _posixsubprocess
import os
import subprocess
from collections.abc import Callable, Generator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Infrastructure:
    fixtures: frozenset[str]  # a test using any of these (directly or through other fixtures) gets the marker
    env: tuple[str, ...]  # withheld from the tests without the marker: removed, or replaced by `stand_in`
    stand_in: str | None = None


INFRASTRUCTURE = {
    "integration": Infrastructure(frozenset({"fhir_base"}), ("CDS_TEST_FHIR_BASE", "CDS_TEST_FHIR_TRAFFIC_DB")),
    "postgres": Infrastructure(frozenset({"postgres_url"}), ("CDS_TEST_POSTGRES_URL",)),
    # chromium's variables have defaults (/usr/bin/chromium): they are replaced by a path that says why it is missing
    "browser": Infrastructure(frozenset(), ("CDS_TEST_CHROMIUM", "CDS_TEST_CHROMEDRIVER"),
                              stand_in="/withheld-from-tests-not-marked-browser"),
}
# Starting processes (cds-service serve under gunicorn, the CLI, nginx, child interpreters) costs seconds each: a test
# that does is marked `processes`, enforced like the infrastructure (the process-starting calls fail without it).
PROCESS_STARTERS = ((subprocess.Popen, "__init__"), (os, "fork"), (os, "posix_spawn"), (os, "posix_spawnp"), (os, "system"),
                    (_posixsubprocess, "fork_exec"))  # subprocess.Popen, multiprocessing (fork, spawn), os.system
# markers that imply others: chromium and chromedriver, pip and the built wheel's server are processes
IMPLIED = {"browser": "processes", "wheel": "processes"}
# the lane without infrastructure, processes or slow tests; `wheel` needs no infrastructure but builds and installs
# (~30 s); `slow` marks the in-process tests that take a second or more by design (real deadlines, fuzzing, big inputs)
QUICK_LANE = "not integration and not postgres and not browser and not wheel and not processes and not slow"

_withheld: dict[str, str] = {}  # variable -> marker, for the test running now


def markers_for(fixturenames: list[str]) -> set[str]:
    """The infrastructure markers a test needs because of the fixtures it uses."""
    used = set(fixturenames)
    return {marker for marker, infra in INFRASTRUCTURE.items() if infra.fixtures & used}


def require_env(name: str, hint: str) -> str:
    """The value of an infrastructure variable, or a loud failure saying why it is missing (never a skip)."""
    value = os.environ.get(name)
    if name in _withheld:
        pytest.fail(f"{name} is withheld from this test: it is not marked `{_withheld[name]}`. Mark it "
                    f"@pytest.mark.{_withheld[name]} (tests/helpers/lanes.py)")
    if not value:
        pytest.fail(f"{name} is not set: {hint}")
    return value


def _refuse(call: str) -> Callable[..., object]:
    def refuse(*args: object, **kwargs: object) -> object:
        pytest.fail(f"this test starts a process ({call}) but is not marked `processes`: mark it @pytest.mark.processes "
                    "(tests/helpers/lanes.py)")

    return refuse


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the infrastructure fixtures it uses (and the markers those imply), before `-m` selects
    (tryfirst)."""
    for item in items:
        for marker in sorted(markers_for(getattr(item, "fixturenames", []))):
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)
        for marker, implied in IMPLIED.items():
            if item.get_closest_marker(marker) and item.get_closest_marker(implied) is None:
                item.add_marker(implied)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Run the test with the variables of the infrastructure it is not marked for withheld, and unable to start a
    process unless it is marked `processes`."""
    saved, outer = dict(os.environ), dict(_withheld)  # outer: when pytest runs inside a test (pytester)
    _withheld.clear()
    for marker, infra in INFRASTRUCTURE.items():
        if item.get_closest_marker(marker) is None:
            for name in infra.env:
                _withheld[name] = marker
                if infra.stand_in is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = infra.stand_in
    starters = [] if item.get_closest_marker("processes") else [(m, n, getattr(m, n)) for m, n in PROCESS_STARTERS]
    for module, name, _ in starters:
        setattr(module, name, _refuse(f"{getattr(module, '__qualname__', module.__name__)}.{name}"))
    try:
        return (yield)
    finally:
        for module, name, original in starters:
            setattr(module, name, original)
        _withheld.clear()
        _withheld.update(outer)
        for name in {n for infra in INFRASTRUCTURE.values() for n in infra.env}:
            if name in saved:
                os.environ[name] = saved[name]
            else:
                os.environ.pop(name, None)
