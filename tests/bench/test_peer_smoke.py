"""The peer comparison runs end to end (smoke-sized; it reports, it does not judge the figures)."""
from __future__ import annotations

import json

from bench import peer


def test_quick_peer_run_reports_every_budget_line(tmp_path):
    assert peer.main(["--quick", "--no-models", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "peer.md").read_text()
    for line in ("c8 throughput >= 0.8x bare", "c1 p50 <= 1.5x bare", "c8 p99 <= 2x bare",
                 "1,000 Observations in-process call <= 1.0x json.loads", "Stored per call"):
        assert line in text
    result = json.loads((tmp_path / "peer.json").read_text())
    assert result["audit"]["rows"] >= result["audit"]["answered"]  # every answered call reached the database


def test_the_peer_body_is_the_realistic_chart():
    body = json.loads(peer.chart_body(200))
    entries = body["prefetch"]["observations"]["entry"]
    assert len(entries) == 200 and len(body["prefetch"]["medicationRequests"]["entry"]) == 10
    assert 200 * 1024 <= len(peer.chart_body(200)) <= 260 * 1024
    low = [e["resource"] for e in entries if e["resource"]["code"]["coding"][0]["code"] == "19123-9"
           and e["resource"]["valueQuantity"]["value"] < 1.8]
    assert len(low) == 1
