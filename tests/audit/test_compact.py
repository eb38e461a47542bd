"""The audit record is small and complete: snapshots stored once by hash and compressed, cards and facts
compressed, gaps aggregated; replay still works on every row, compact snapshots included."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from bench.peer import chart_body
from cds_service.audit.compact import GAP_SAMPLE
from cds_service.audit.schema import RecordSnapshotRow
from cds_service.cli import main
from cds_service.services import get_services
from tests.audit.helpers import PATIENT_VIEW, patient_view_body, rows

URL = f"/cds-services/{PATIENT_VIEW}"


def stored_bytes(store) -> int:
    """Every byte of every invocation row's columns, card rows, and the snapshot table (as stored: PostgreSQL's
    pg_column_size, SQLite's byte length)."""
    from sqlalchemy import inspect

    pg = store.engine.dialect.name == "postgresql"
    size = (lambda c: f"COALESCE(pg_column_size({c}), 0)") if pg else (lambda c: f"COALESCE(LENGTH(CAST({c} AS BLOB)), 0)")
    with store.engine.connect() as conn:
        cols = [c["name"] for c in inspect(conn).get_columns("invocation")]
        invocation = conn.execute(text("SELECT SUM(" + " + ".join(size(c) for c in cols) + ") FROM invocation")).scalar() or 0
        cards = conn.execute(text("SELECT SUM(" + " + ".join(size(c) for c in ("uuid", "service_id", "rule", "indicator"))
                                  + " + 8) FROM card")).scalar() or 0
        snapshots = conn.execute(text(f"SELECT COALESCE(SUM({size('content')}), 0) FROM record_snapshot")).scalar()
    return int(invocation + cards + snapshots)


@pytest.mark.slow
def test_a_realistic_chart_costs_under_8_kb_per_call_and_its_snapshot_is_stored_once(app_factory, sqlite_url):
    app = app_factory(database_url=sqlite_url)
    client = app.test_client()
    body = json.loads(chart_body(200))  # about 230 KB: Patient, 200 Observations, 10 MedicationRequests
    answers = []
    for i in range(20):
        body["hookInstance"] = f"chart-{i}"
        resp = client.post(URL, json=body)
        assert resp.status_code == 200 and len(resp.get_json()["cards"]) >= 2
        answers.append(resp.get_json()["cards"])
    stored = rows(app)
    store = get_services(app).store
    with store.sessions() as s:
        assert s.scalar(select(func.count()).select_from(RecordSnapshotRow)) == 1  # the same record, stored once
    assert len({r.snapshot_hash for r in stored}) == 1
    per_call = stored_bytes(store) / len(stored)
    assert per_call <= 8 * 1024, f"{per_call:.0f} bytes stored per call"
    # complete: the cards as answered, the facts each used, the record for replay
    assert [r.cards for r in stored] == answers
    assert stored[0].facts["hypomagnesemia"][0]["value"] == 1.3
    assert len(stored[0].record_snapshot["labs"]["magnesium"]) == 20
    result = CliRunner().invoke(main, ["audit", "replay", "--database-url", sqlite_url])
    assert result.exit_code == 0 and "replayed 20 call(s)" in result.output, result.output


@pytest.mark.slow
def test_a_prefetch_of_50000_unreadable_entries_makes_a_small_row_that_replays_unchanged(app_factory, db_url):
    app = app_factory(database_url=db_url, max_body_bytes=16 * 1024 * 1024)
    body = patient_view_body("hi-gaps", mg=1.1)
    body["prefetch"]["observations"]["entry"] += [{"resource": {"resourceType": "Observation", "id": f"o{i}"}}
                                                  for i in range(50_000)]
    resp = app.test_client().post(URL, json=body)
    assert resp.status_code == 200
    gap_card = next(c for c in resp.get_json()["cards"] if "partial data" in c["summary"])
    assert "50000 entries could not be read" in gap_card["summary"]
    [row] = rows(app)
    assert row.gap_counts == {"entry-skipped": 50_000} and len(row.gaps) == GAP_SAMPLE
    assert stored_bytes(get_services(app).store) < 20 * 1024  # was one gap (and one fact) per entry: ~20 MB
    assert row.facts["data-gaps"][-1] == {"kind": "omitted", "count": 50_000 - 60}
    assert len(row.record_snapshot["gaps"]) == GAP_SAMPLE and row.record_snapshot["gapsOmitted"] == {"entry-skipped": 49_990}
    result = CliRunner().invoke(main, ["audit", "replay", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "replayed 1 call(s)" in result.output and result.output.strip().endswith("no change")
