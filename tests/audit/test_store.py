"""Writer hardening: an outage never reaches the response and is counted; nothing lost on a normal exit; retention."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from cds_service.audit.database import make_engine
from cds_service.audit.schema import CardRow, FeedbackRow, InvocationRow
from cds_service.audit.store import AuditStore
from cds_service.cli import main
from cds_service.services import get_services
from tests.audit.helpers import PATIENT_VIEW, card, feedback_rows, invocation, patient_view_body, rows

REPO = Path(__file__).resolve().parents[2]
DOWN = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"  # nothing listens on port 1


@pytest.mark.slow
def test_store_outage_keeps_records_in_the_spool_and_ships_them_when_it_returns(app_factory):
    app = app_factory()
    store = get_services(app).store
    working = store.sessions
    store.sessions = sessionmaker(make_engine(DOWN))  # the database goes away after start-up
    resp = app.test_client().post(f"/cds-services/{PATIENT_VIEW}", json=patient_view_body("hi-outage"))
    assert resp.status_code == 200 and resp.get_json()["cards"]
    assert not store.flush(timeout=1.0)  # nothing can be shipped, and nothing is thrown away
    stats = store.stats()
    assert (stats["written"], stats["failed"], stats["dropped"], stats["queued"]) == (0, 0, 0, 1)
    assert stats["lastError"] and "OperationalError" in stats["lastError"] and stats["spoolBytes"] > 0
    ready = app.test_client().get("/readyz").get_json()
    assert ready["checks"]["auditWriter"]["queued"] == 1 and ready["checks"]["auditWriter"]["lagSeconds"] > 0
    store.sessions = working  # the database is back
    assert [r.hook_instance for r in rows(store)] == ["hi-outage"]
    assert store.stats()["queued"] == 0 and store.stats()["lagSeconds"] == 0.0 and store.stats()["spoolBytes"] == 0


def test_a_stalled_database_never_blocks_the_caller_and_loses_nothing(sqlite_url):
    import threading

    store = AuditStore(sqlite_url)
    entered, release = threading.Event(), threading.Event()
    real_ship = store._ship_now

    def stalled(batch, retry=True):  # the database stalls on the first write
        entered.set()
        release.wait(30)
        real_ship(batch, retry=retry)

    store._ship_now = stalled
    store.record_invocation(invocation("hi-0"))
    assert entered.wait(5)
    for i in range(1, 300):  # would hang here if recording waited for the writer
        store.record_invocation(invocation(f"hi-{i}"))
    assert store.stats()["queued"] >= 299 and store.stats()["dropped"] == 0
    release.set()
    assert sorted(r.hook_instance for r in rows(store)) == sorted(f"hi-{i}" for i in range(300))
    assert (store.stats()["written"], store.stats()["dropped"], store.stats()["failed"]) == (300, 0, 0)
    store.close()


def test_in_memory_sqlite_store_writes_from_its_background_thread():
    store = AuditStore("sqlite://")
    store.record_invocation(invocation("hi-mem", cards=[card("c-mem", "hypomagnesemia")]))
    assert [r.hook_instance for r in rows(store)] == ["hi-mem"]
    assert store.stats()["failed"] == 0
    store.close()


@pytest.mark.processes
def test_queued_records_are_written_on_a_normal_exit(tmp_path):
    url = f"sqlite:///{tmp_path}/exit.sqlite3"
    script = textwrap.dedent(f"""
        from tests.audit.helpers import invocation
        from cds_service.audit.store import AuditStore
        store = AuditStore({url!r})
        for i in range(400):
            store.record_invocation(invocation(f"exit-{{i}}"))
        # no flush(), no close(): the interpreter exits with records still queued
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=120)
    store = AuditStore(url, background=False)
    with store.sessions() as s:
        assert s.scalar(select(func.count()).select_from(InvocationRow)) == 400
    store.close()


def test_purge_removes_old_invocations_cards_and_feedback(sqlite_url):
    now = datetime.now(UTC)
    store = AuditStore(sqlite_url, background=False)
    store.record_invocation(invocation("old", received_at=now - timedelta(days=40), cards=[card("c-old", "hypomagnesemia")]))
    store.record_invocation(invocation("new", received_at=now - timedelta(days=2), cards=[card("c-new", "hypomagnesemia")]))
    store.record_feedback(PATIENT_VIEW, [{"card": "c-new", "outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:00:00Z"}])
    with store.sessions.begin() as s:  # feedback received long ago for the old card
        s.add(FeedbackRow(service_id=PATIENT_VIEW, card_uuid="c-old", outcome="accepted", outcome_timestamp="x",
                          accepted_suggestions=[], unknown_card=False, received_at=now - timedelta(days=39)))
    result = CliRunner().invoke(main, ["audit", "purge", "--older-than", "30", "--yes", "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    assert "purged 1 invocation, 1 card, 1 feedback" in result.output
    assert [r.hook_instance for r in rows(store)] == ["new"]
    with store.sessions() as s:
        assert [c.uuid for c in s.execute(select(CardRow)).scalars()] == ["c-new"]
    assert [f.card_uuid for f in feedback_rows(store)] == ["c-new"]
    store.close()


def test_purge_uses_the_retention_setting(sqlite_url, monkeypatch):
    store = AuditStore(sqlite_url, background=False)
    now = datetime.now(UTC)
    store.record_invocation(invocation("a", received_at=now - timedelta(days=11)))
    store.record_invocation(invocation("b", received_at=now - timedelta(days=9)))
    monkeypatch.setenv("CDS_AUDIT_RETENTION_DAYS", "10")
    result = CliRunner().invoke(main, ["audit", "purge", "--yes", "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    assert [r.hook_instance for r in rows(store)] == ["b"]
    monkeypatch.setenv("CDS_AUDIT_RETENTION_DAYS", "0")
    result = CliRunner().invoke(main, ["audit", "purge", "--yes", "--database-url", sqlite_url])
    assert "keep forever" in result.output and [r.hook_instance for r in rows(store)] == ["b"]
    store.close()


def test_a_burst_is_written_in_batches_and_one_bad_record_loses_no_other(sqlite_url):
    """Calls spooled faster than one commit each share transactions (WRITE_BATCH); a record the database
    refuses makes its batch fall back to one transaction per record: only that record is set aside
    (kept in the spool's rejected/ directory and counted)."""
    import threading

    from cds_service.audit import writer
    from cds_service.audit.spool import read_frames

    store = AuditStore(sqlite_url)
    gate, batches = threading.Event(), []
    real_batch = store._ship_batch

    def held_batch(batch):  # hold the writer on its first batch so that the rest pile up in the spool
        batches.append(len(batch))
        if len(batches) == 1:
            gate.wait(10)
        real_batch(batch)

    store._ship_batch = held_batch
    store.record_invocation(invocation("burst-0"))
    bad = invocation("burst-bad")
    bad.service_id = None  # NOT NULL in the database
    for i in range(1, 500):
        store.record_invocation(bad if i == 60 else invocation(f"burst-{i}"))
    gate.set()
    written = [r.hook_instance for r in rows(store)]
    assert len(written) == 499 and "burst-bad" not in written
    assert max(batches) == writer.WRITE_BATCH > 1
    assert (store.stats()["written"], store.stats()["failed"]) == (499, 1)
    [rejected] = (store.spool_dir / "rejected").iterdir()
    with open(rejected, "rb") as fh:
        assert [f.meta["hook_instance"] for f in read_frames(fh)] == ["burst-bad"]
    store.close()


def test_get_returns_cards_facts_and_the_decompressed_snapshot_by_hook_instance(app_factory):
    app = app_factory()
    resp = app.test_client().post(f"/cds-services/{PATIENT_VIEW}", json=patient_view_body("hi-get", mg=1.1))
    store = get_services(app).store
    assert store.flush()
    got = store.get("hi-get")
    assert got["cards"] == resp.get_json()["cards"]
    assert got["facts"]["hypomagnesemia"][0]["value"] == 1.1
    assert got["recordSnapshot"]["labs"]["magnesium"][0]["value"] == 1.1
    assert store.get("no-such-call") is None


def test_an_unwritable_spool_falls_back_to_writing_the_database_directly(sqlite_url, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the spool directory should be")
    store = AuditStore(sqlite_url, spool_dir=str(blocked))
    store.record_invocation(invocation("hi-no-spool"))
    assert [r.hook_instance for r in rows(store)] == ["hi-no-spool"]
    assert store.stats()["dropped"] == 0 and "audit spool" in store.stats()["lastError"]
    store.close()
