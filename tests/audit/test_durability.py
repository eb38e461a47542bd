"""Nothing lost, nothing blocking: `cds-service serve` (real gunicorn processes) under a database outage, with
a worker killed (-9) and the service stopped (SIGTERM) while records wait to be shipped; SQLite and PostgreSQL.

The outage is real: for SQLite another connection holds the write lock (``BEGIN EXCLUSIVE``: the database
is locked); for PostgreSQL the service reaches the database through a TCP proxy that is cut (connections
reset, new ones refused). Every call answered 200 must end up as exactly one audit row.
"""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from sqlalchemy import func, select

from cds_service.audit.schema import InvocationRow
from cds_service.audit.store import AuditStore
from tests.audit.helpers import PATIENT_VIEW, patient_view_body
from tests.helpers.processes import CuttableProxy, Served

pytestmark = pytest.mark.processes  # cds-service serve under gunicorn, stopped with SIGTERM and kill -9

CALLS = 24


class Outage:
    """The audit database goes away and comes back (see the module docstring)."""

    def __init__(self, backend: str, db_url: str):
        self.backend, self.db_url = backend, db_url
        self.proxy: CuttableProxy | None = None
        self._lock: sqlite3.Connection | None = None
        self.service_url = db_url
        if backend == "postgres":
            parts = urlsplit(db_url)
            self.proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
            netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
            self.service_url = urlunsplit(parts._replace(netloc=f"{netloc}:{self.proxy.port}", query="connect_timeout=2"))

    def begin(self) -> None:
        if self.proxy is not None:
            self.proxy.cut()
        else:
            self._lock = sqlite3.connect(self.db_url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
            self._lock.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        elif self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        else:
            self.end()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])  # postgres_url fetched by name
def outage(request, tmp_path) -> Iterator[Outage]:
    url = f"sqlite:///{tmp_path}/audit.sqlite3" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    AuditStore(url, background=False).close()  # the schema exists before the outage
    o = Outage(request.param, url)
    yield o
    o.close()


def call(base: str, tag: str) -> str | None:
    """One patient-view call; its hookInstance when answered 200, else None."""
    try:
        r = requests.post(f"{base}/cds-services/{PATIENT_VIEW}", json=patient_view_body(tag), timeout=30)
    except requests.RequestException:
        return None  # not answered (e.g. the connection of a killed worker): nothing to keep
    return tag if r.status_code == 200 and r.json()["cards"] else None


def calls(base: str, prefix: str, n: int = CALLS) -> set[str]:
    with ThreadPoolExecutor(4) as pool:
        return {t for t in pool.map(lambda i: call(base, f"{prefix}-{i}"), range(n)) if t}


def stored(db_url: str, expected: set[str], wait: float = 90.0) -> dict[str, int]:
    """hookInstance -> row count, once every expected one is there (or the wait is over)."""
    store = AuditStore(db_url, create=False, background=False)
    deadline = time.monotonic() + wait
    try:
        while True:
            with store.sessions() as s:
                counts = dict(s.execute(select(InvocationRow.hook_instance, func.count())
                                        .group_by(InvocationRow.hook_instance)).all())
            if expected <= set(counts) or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)
    finally:
        store.close()


def writer_lag(base: str) -> tuple[int, float]:
    """(records waiting, age of the oldest) from /readyz: its checks when ready; in the not-ready
    OperationOutcome's diagnostics when the store cannot be reached."""
    resp = requests.get(base + "/readyz", timeout=10)
    if resp.status_code == 200:
        writer = resp.json()["checks"]["auditWriter"]
        return writer["queued"], writer["lagSeconds"]
    text = resp.json()["issue"][0]["diagnostics"]
    queued, lag = re.search(r"'queued': (\d+)", text), re.search(r"'lagSeconds': ([\d.]+)", text)
    assert queued and lag, text
    return int(queued.group(1)), float(lag.group(1))


def spool_files(tmp: Path) -> list[Path]:
    return [p for p in (tmp / "spool").rglob("*.spool")]


def test_kill_9_of_a_worker_during_an_outage_loses_no_answered_call(outage, tmp_path):
    with Served(tmp_path, outage.service_url) as served:
        answered = calls(served.url, "before")
        outage.begin()
        answered |= calls(served.url, "down")
        victim = served.workers()[0]
        os.kill(victim, signal.SIGKILL)  # its spooled records were never shipped: the database is down
        served.wait_for_workers(2, exclude={victim})
        answered |= calls(served.url, "after-kill")
        assert len(answered) >= 2 * CALLS  # the surviving workers answered during the outage
        outage.end()
        counts = stored(outage.db_url, answered)
        assert answered <= set(counts), f"answered but never stored: {sorted(answered - set(counts))[:10]}"
        assert {counts[t] for t in answered} == {1}  # shipped once, even when a spool is read again
        assert "shipped" in served.log()  # the dead worker's spool was shipped by a live one
        assert served.stop() == 0


def test_sigterm_with_records_waiting_loses_none_they_are_shipped_at_the_next_start(outage, tmp_path):
    served = Served(tmp_path, outage.service_url).start()
    outage.begin()
    answered = calls(served.url, "term")
    assert len(answered) == CALLS
    assert served.stop(signal.SIGTERM) == 0  # gunicorn's graceful stop, with the database still down
    assert spool_files(tmp_path), "the unshipped records should still be in the spool"
    outage.end()
    assert not answered & set(stored(outage.db_url, set(), wait=0))  # nothing could have been written
    with Served(tmp_path, outage.service_url):  # start-up ships the spools of the processes that are gone
        counts = stored(outage.db_url, answered)
    assert answered <= set(counts), f"lost on SIGTERM: {sorted(answered - set(counts))[:10]}"
    assert {counts[t] for t in answered} == {1}
    assert not spool_files(tmp_path)


def test_an_outage_shows_as_writer_lag_and_the_backlog_is_shipped_when_the_database_returns(outage, tmp_path):
    with Served(tmp_path, outage.service_url, workers=1) as served:
        outage.begin()
        answered = calls(served.url, "lag")
        assert len(answered) == CALLS  # answered while the database is down
        queued, lag = writer_lag(served.url)
        assert queued == CALLS and lag > 0
        outage.end()
        counts = stored(outage.db_url, answered)
        assert answered <= set(counts)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = requests.get(served.url + "/readyz", timeout=10).json()
            if body.get("checks", {}).get("auditWriter", {}).get("queued") == 0:
                break
            time.sleep(0.3)
        assert body["checks"]["auditWriter"]["queued"] == 0 and body["checks"]["auditWriter"]["lagSeconds"] == 0.0
