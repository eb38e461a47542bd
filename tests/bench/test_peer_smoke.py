"""The peer comparison runs end to end (smoke-sized; it reports, it does not judge the figures)."""
from __future__ import annotations

import json

import pytest

from bench import peer


@pytest.mark.processes
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


@pytest.mark.slow
def test_in_process_only_reports_item_3_lines_typed_and_plain(tmp_path, monkeypatch):
    """`--in-process-only` measures the call with the typed decoding and with the plain reading (the read_json
    switch really switches: the typed call reaches decode_typed, the plain one does not)."""
    from cds_service.api import body as body_module

    decoded = []
    real = body_module.decode_typed
    monkeypatch.setattr(body_module, "decode_typed", lambda raw: decoded.append(len(raw)) or real(raw))
    assert peer.main(["--in-process-only", "--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "peer-in-process.md").read_text()
    for line in ("1,000 Observations in-process call <= 1.0x json.loads", "10 Observations in-process call <= 1.5 ms",
                 "Call, typed decoding", "Call, plain reading"):
        assert line in text
    # 20 + 3 warm-up typed calls with 1,000 Observations and 100 + 3 with 10: no plain call went through it
    assert len(decoded) == 23 + 103
