"""Replay: stored snapshots through the current or a changed knowledge; exit 1 when any card would change."""
from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from cds_service.audit.invocation import snapshot
from cds_service.audit.replay import record_from_snapshot
from cds_service.cli import main
from cds_service.knowledge import DATA_DIR
from tests.audit.helpers import PATIENT_VIEW, patient_view_body, rows


def _record_calls(app_factory, db_url):
    app = app_factory(database_url=db_url)
    client = app.test_client()
    for hi, mg in (("hi-low", 1.6), ("hi-normal", 2.1)):
        assert client.post(f"/cds-services/{PATIENT_VIEW}", json=patient_view_body(hi, mg=mg, patient=hi)).status_code == 200
    assert client.post(f"/cds-services/{PATIENT_VIEW}", json={"hook": "patient-view"}).status_code == 400  # no snapshot
    stored = rows(app)
    assert "hypomagnesemia" in stored[0].rules_fired and "hypomagnesemia" not in stored[1].rules_fired
    return stored


def test_unchanged_knowledge_replays_identically(app_factory, db_url):
    _record_calls(app_factory, db_url)
    result = CliRunner().invoke(main, ["audit", "replay", "--database-url", db_url])
    assert result.exit_code == 0, result.stdout
    assert "replayed 2 call(s)" in result.stdout and "1 without a snapshot skipped" in result.stdout
    assert result.stdout.strip().endswith("no change")


def test_a_lower_magnesium_threshold_makes_the_card_disappear(app_factory, db_url, tmp_path):
    _record_calls(app_factory, db_url)
    changed = tmp_path / "knowledge"
    shutil.copytree(DATA_DIR, changed)
    path = changed / "knowledge.yaml"
    text = path.read_text()
    old = 'magnesium_low: {value: 1.8,'
    assert text.count(old) == 1
    path.write_text(text.replace(old, 'magnesium_low: {value: 1.5,'))

    result = CliRunner().invoke(main, ["audit", "replay", "--knowledge", str(changed), "--json", "--database-url", db_url])
    assert result.exit_code == 1, result.stdout
    report = json.loads(result.stdout)
    gone = [c for c in report["changes"] if c["rule"] == "hypomagnesemia"]
    assert len(gone) == 1
    assert (gone[0]["hookInstance"], gone[0]["change"], gone[0]["after"]) == ("hi-low", "disappear", None)
    assert gone[0]["before"]["summary"].startswith("Hypomagnesemia: magnesium 1.60 mg/dL")
    assert report["perRule"]["hypomagnesemia"] == {"appear": 0, "disappear": 1, "change": 0}
    assert all(c["hookInstance"] == "hi-low" for c in report["changes"])  # the 2.1 mg/dL patient is untouched

    text_out = CliRunner().invoke(main, ["audit", "replay", "--knowledge", str(changed), "--database-url", db_url])
    assert text_out.exit_code == 1
    assert "[disappear] hypomagnesemia hookInstance=hi-low" in text_out.stdout and "CHANGED" in text_out.stdout


def test_a_higher_threshold_makes_a_card_appear(app_factory, sqlite_url, tmp_path):
    _record_calls(app_factory, sqlite_url)
    changed = tmp_path / "knowledge"
    shutil.copytree(DATA_DIR, changed)
    path = changed / "knowledge.yaml"
    path.write_text(path.read_text().replace('magnesium_low: {value: 1.8,', 'magnesium_low: {value: 2.2,'))
    result = CliRunner().invoke(main, ["audit", "replay", "--knowledge", str(changed), "--json", "--database-url", sqlite_url])
    assert result.exit_code == 1
    appeared = [c for c in json.loads(result.stdout)["changes"] if c["rule"] == "hypomagnesemia"]
    assert [(c["hookInstance"], c["change"], c["after"]["indicator"]) for c in appeared] == [("hi-normal", "appear", "warning")]


def test_record_from_snapshot_is_the_inverse_of_snapshot(app_factory, sqlite_url):
    stored = _record_calls(app_factory, sqlite_url)
    for row in stored[:2]:
        assert snapshot(record_from_snapshot(row.record_snapshot)) == row.record_snapshot
