"""The benchmark suite runs end to end (smoke-sized) and writes its report and chart. No timing assertions."""
from __future__ import annotations

import json

import pytest

from bench import report, run

pytestmark = pytest.mark.processes  # the benchmark runs the service as a process


def test_quick_run_writes_the_report_and_chart(tmp_path):
    assert run.main(["--quick", "--out", str(tmp_path)]) == 0

    text = (tmp_path / "REPORT.md").read_text(encoding="utf-8")
    for heading in report.SECTIONS:
        assert heading in text, f"report lacks {heading!r}"
    budget_table = text.split("## Budget")[1].split("##")[0]
    assert "| Budget line | Measured | Result |" in budget_table
    assert "Load: every invocation reached the audit store" in budget_table
    assert "No prefetch: parallel fetch within 1.5 x the slowest single query" in budget_table

    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["observations"] for r in results["scaling"]] == [10, 100]
    assert all(r["median_ms"] > 0 and r["loads_median_ms"] > 0 for r in results["scaling"])
    http = results["http"]
    assert {(r["target"], r["concurrency"]) for r in http["rows"]} == {("service", 1), ("service", 4), ("trivial", 1), ("trivial", 4)}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in http["rows"]), http["error_samples"]
    assert http["audit_rows"] == http["sent_to_service"]  # issue 4 "Load": no lost audit records
    assert http["workers"] >= 1 and len(http["worker_rss_mb"]) == http["workers"]
    nopf = results["noprefetch"]
    assert nopf["error"] is None, nopf["error"]
    assert set(nopf["single_ms"]) == {"patient", "observations", "medicationRequests", "medicationStatements", "conditions"}
    assert nopf["entries"]["observations"] > 0
