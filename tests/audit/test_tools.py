"""`cds-service audit` list/show/export/report on a known dataset; expected numbers worked out by hand below."""
from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from cds_service.audit.store import AuditStore
from cds_service.cli import main
from tests.audit.helpers import PATIENT_VIEW, card, invocation

ORDER_SIGN = "magnesium-order-sign"
HYPO, WASTING, GAPS = "hypomagnesemia", "magnesium-wasting-drug", "data-gaps"


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.fixture
def dataset(db_url):
    """Inside 2026-11-01..30: patient-view 10 calls (latency 10..100 ms; 7x200, 2x412, 1x400),
    order-sign 5 calls (5..45 ms; 4x200, 1x500). One more patient-view call on 2026-10-01 (outside)."""
    store = AuditStore(db_url, background=False)
    pv_cards = {  # call index -> cards (7 OK calls: 0..6)
        0: [card("h1", HYPO, "critical")], 1: [card("h2", HYPO)], 2: [card("h3", HYPO), card("g1", GAPS, "info")],
        3: [card("h4", HYPO)], 4: [card("g2", GAPS, "info")], 5: [], 6: [],
    }
    statuses = [200] * 7 + [412, 412, 400]
    for i, status in enumerate(statuses):
        cards = pv_cards.get(i, [])
        evaluated = ([HYPO] + ([GAPS] if any(c["source"]["topic"]["code"] == GAPS for c in cards) else [])) if status == 200 else []
        store.record_invocation(invocation(f"pv-{i}", status=status, latency_ms=10.0 * (i + 1), received_at=at(10 + i),
                                           cards=cards, evaluated=evaluated))
    os_cards = {0: [card("h5", HYPO), card("w1", WASTING)], 1: [card("w2", WASTING)], 2: [], 3: []}
    for i, status in enumerate([200, 200, 200, 200, 500]):
        store.record_invocation(invocation(f"os-{i}", service_id=ORDER_SIGN, status=status, latency_ms=5.0 + 10 * i,
                                           received_at=at(20 + i), cards=os_cards.get(i, []),
                                           evaluated=[HYPO, WASTING] if status == 200 else []))
    store.record_invocation(invocation("pv-october", latency_ms=1000.0, received_at=datetime(2026, 10, 1, tzinfo=UTC),
                                       cards=[card("h-oct", HYPO, "critical")]))

    def fb(card_id, outcome, ts, code=None, comment=None, service=PATIENT_VIEW):
        item = {"card": card_id, "outcome": outcome, "outcomeTimestamp": ts}
        if code or comment:
            item["overrideReason"] = {"reason": {"code": code} if code else None, "userComment": comment}
        return store.record_feedback(service, [item])

    fb("h1", "accepted", "2026-11-10T12:01:00Z")
    fb("h1", "accepted", "2026-11-10T12:01:00Z")  # sent twice: stored once
    fb("h2", "accepted", "2026-11-11T12:01:00Z")
    fb("h3", "overridden", "2026-11-12T12:01:00Z", code="already-treated")
    fb("h4", "overridden", "2026-11-13T12:01:00Z", code="already-treated")
    fb("h4", "accepted", "2026-11-13T12:30:00Z")  # changed their mind: the latest outcome counts
    fb("h5", "overridden", "2026-11-20T12:01:00Z", code="patient-declined", service=ORDER_SIGN)
    fb("w1", "overridden", "2026-11-20T12:02:00Z", comment="renal team aware", service=ORDER_SIGN)
    fb("h-oct", "overridden", "2026-10-01T00:05:00Z", code="already-treated")  # outside the window
    fb("no-such-card", "accepted", "2026-11-21T00:00:00Z")  # unknown: kept, flagged
    store.close()
    return db_url


def run(*args):
    result = CliRunner().invoke(main, ["audit", *args])
    return result


def test_report_numbers(dataset):
    result = run("report", "--json", "--since", "2026-11-01", "--until", "2026-11-30", "--database-url", dataset)
    assert result.exit_code == 0, result.stdout
    r = json.loads(result.stdout)
    assert r["invocations"] == 15
    # hypomagnesemia: evaluated in 7 + 4 OK calls; cards h1 (critical), h2, h3, h4, h5 (warning)
    # feedback (latest per card): h1, h2, h4 accepted; h3 (already-treated), h5 (patient-declined) overridden -> 3/5
    assert r["rules"][HYPO] == {"evaluated": 11, "fired": 5, "cards": {"critical": 1, "warning": 4, "info": 0},
                                "accepted": 3, "overridden": 2,
                                "overrideReasons": {"already-treated": 1, "patient-declined": 1}, "acceptanceRate": 0.6}
    assert r["rules"][WASTING] == {"evaluated": 4, "fired": 2, "cards": {"critical": 0, "warning": 2, "info": 0},
                                   "accepted": 0, "overridden": 1, "overrideReasons": {"(comment only)": 1},
                                   "acceptanceRate": 0.0}
    assert r["rules"][GAPS] == {"evaluated": 2, "fired": 2, "cards": {"critical": 0, "warning": 0, "info": 2},
                                "accepted": 0, "overridden": 0, "overrideReasons": {}, "acceptanceRate": None}
    # patient-view latencies 10..100: nearest rank p50 = 5th = 50, p95 = 10th = 100
    assert r["services"][PATIENT_VIEW] == {"calls": 10, "ok": 7, "errors": 1, "412": 2, "p50Ms": 50.0, "p95Ms": 100.0}
    # order-sign latencies 5, 15, 25, 35, 45: p50 = 3rd = 25, p95 = 5th = 45
    assert r["services"][ORDER_SIGN] == {"calls": 5, "ok": 4, "errors": 1, "412": 0, "p50Ms": 25.0, "p95Ms": 45.0}
    assert r["unknownCardFeedback"] == 1


def test_report_without_a_window_includes_october(dataset):
    r = json.loads(run("report", "--json", "--database-url", dataset).stdout)
    assert r["invocations"] == 16
    assert r["rules"][HYPO]["cards"]["critical"] == 2 and r["rules"][HYPO]["overridden"] == 3
    assert r["services"][PATIENT_VIEW]["p95Ms"] == 1000.0


def test_report_as_a_table(dataset):
    result = run("report", "--since", "2026-11-01", "--until", "2026-11-30", "--database-url", dataset)
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Audit report 2026-11-01T00:00:00+00:00 .. 2026-12-01T00:00:00+00:00: 15 invocation(s)")
    hypo = next(line for line in lines if line.startswith(HYPO)).split()
    assert hypo[:9] == [HYPO, "11", "5", "1", "4", "0", "3", "2", "60.0%"]
    pv = next(line for line in lines if line.startswith(PATIENT_VIEW)).split()
    assert pv == [PATIENT_VIEW, "10", "7", "1", "2", "50.0", "100.0"]


def test_export_csv_parses_back(dataset, tmp_path):
    out = tmp_path / "export.csv"
    result = run("export", "--format", "csv", "--since", "2026-11-01", "--rule", WASTING, "--output", str(out),
                 "--database-url", dataset)
    assert result.exit_code == 0, result.stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["hookInstance"] for r in rows] == ["os-0", "os-1", "os-2", "os-3"]
    assert rows[0]["rulesFired"] == f"{HYPO};{WASTING}" and rows[0]["cardIndicators"] == "warning;warning"
    assert [c["uuid"] for c in json.loads(rows[0]["cards"])] == ["h5", "w1"]
    assert rows[0]["serviceId"] == ORDER_SIGN and rows[0]["status"] == "200" and float(rows[1]["latencyMs"]) == 15.0


def test_export_ndjson_parses_back_with_feedback(dataset):
    result = run("export", "--format", "ndjson", "--service", PATIENT_VIEW, "--since", "2026-11-12",
                 "--until", "2026-11-13", "--database-url", dataset)
    assert result.exit_code == 0, result.stdout
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["hookInstance"] for d in docs] == ["pv-2", "pv-3"]  # the 12th and the 13th (a bare --until date is inclusive)
    assert [f["outcome"] for f in docs[1]["feedback"]] == ["overridden", "accepted"]
    assert docs[0]["cards"][1]["source"]["topic"]["code"] == GAPS and docs[0]["receivedAt"].startswith("2026-11-12T12:00")


def test_list_and_show(dataset):
    result = run("list", "--limit", "3", "--database-url", dataset)
    assert result.exit_code == 0, result.stdout
    body = result.stdout.splitlines()[2:]
    assert [line.split()[3] for line in body] == ["pv-october", "os-4", "os-3"]  # newest recorded first
    shown = run("show", "pv-0", "--database-url", dataset)
    assert shown.exit_code == 0, shown.stdout
    doc = json.loads(shown.stdout)
    assert doc["hookInstance"] == "pv-0" and doc["cards"][0]["indicator"] == "critical"
    assert [f["outcome"] for f in doc["feedback"]] == ["accepted"]
    missing = run("show", "nope", "--database-url", dataset)
    assert missing.exit_code == 1 and "no invocation" in missing.output
