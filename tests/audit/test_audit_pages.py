"""The /audit/ pages: off by default, behind client authentication, and rendered in real headless chromium."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from cds_service.audit.queries import aware
from tests.audit.helpers import PATIENT_VIEW, patient_view_body, rows, serve, trusted_issuers_file

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "test-artifacts" / "audit-page.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1400"]


def test_pages_are_off_by_default(app):
    assert app.test_client().get("/audit/").status_code == 404


def test_pages_do_not_bypass_client_authentication(app_factory, tmp_path):
    app = app_factory(audit_ui=True, auth_mode="required", trusted_issuers_file=trusted_issuers_file(tmp_path))
    for path in ("/audit/", "/audit/invocations/1", "/audit/static/audit.css"):
        resp = app.test_client().get(path)
        assert resp.status_code == 401, path
        assert resp.get_json()["resourceType"] == "OperationOutcome"


def test_unknown_invocation_is_a_404_outcome(app_factory):
    resp = app_factory(audit_ui=True).test_client().get("/audit/invocations/999")
    assert resp.status_code == 404 and resp.get_json()["resourceType"] == "OperationOutcome"


def _driver(user_data_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = os.environ.get("CDS_TEST_CHROMIUM", "/usr/bin/chromium")
    chromedriver = os.environ.get("CDS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
    for name, path in (("chromium (CDS_TEST_CHROMIUM)", chromium), ("chromedriver (CDS_TEST_CHROMEDRIVER)", chromedriver)):
        if not Path(path).is_file():
            pytest.fail(f"{name} not found at {path}: apt-get install -y --no-install-recommends chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={user_data_dir}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


@pytest.mark.browser
def test_audit_page_in_headless_chromium(app_factory):
    from selenium.webdriver.common.by import By

    app = app_factory(audit_ui=True)
    profile = tempfile.mkdtemp(prefix="audit-chromium-")
    with serve(app) as base:
        http = requests.Session()
        low = http.post(f"{base}/cds-services/{PATIENT_VIEW}", json=patient_view_body("hi-browser-low", mg=1.6, patient="pt-low"))
        assert low.status_code == 200
        http.post(f"{base}/cds-services/{PATIENT_VIEW}", json=patient_view_body("hi-browser-severe", mg=1.0, patient="pt-sev"))
        http.post(f"{base}/cds-services/{PATIENT_VIEW}", json=patient_view_body("hi-browser-ok", mg=2.1, patient="pt-ok"))
        http.post(f"{base}/cds-services/{PATIENT_VIEW}", data="not json", headers={"Content-Type": "application/json"})
        low_card = next(c for c in low.json()["cards"] if c["source"]["topic"]["code"] == "hypomagnesemia")
        fb = http.post(f"{base}/cds-services/{PATIENT_VIEW}/feedback", json={"feedback": [
            {"card": low_card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:01:00Z"}]})
        assert fb.status_code == 200
        stored = rows(app)
        assert len(stored) == 4
        driver = _driver(profile)
        try:
            driver.get(f"{base}/audit/")
            assert driver.title.startswith("Recent invocations")
            recent = driver.find_elements(By.CSS_SELECTOR, "#recent tr.invocation")
            assert [r.get_attribute("data-hook-instance") for r in recent] == ["", "hi-browser-ok", "hi-browser-severe",
                                                                               "hi-browser-low"]
            assert "400" in recent[0].text and "malformed-json" in recent[0].text
            low_row = recent[3]
            assert "Hypomagnesemia: magnesium 1.60 mg/dL" in low_row.text and "accepted" in low_row.text
            severe_badge = recent[2].find_element(By.CSS_SELECTOR, ".badge.critical")
            assert severe_badge.value_of_css_property("background-color") in ("rgba(207, 34, 46, 1)", "rgb(207, 34, 46)")
            chart = driver.find_element(By.CSS_SELECTOR, 'svg.chart[data-rule="hypomagnesemia"]')
            bars = {b.get_attribute("data-day"): int(b.get_attribute("data-count"))
                    for b in chart.find_elements(By.CSS_SELECTOR, "rect.bar")}
            days = [aware(r.received_at).date().isoformat() for r in stored]  # the low and severe calls fired
            expected = {d: 0 for d in bars}
            for d in days[:2]:
                expected[d] += 1
            assert len(bars) == 30 and bars == expected and sum(bars.values()) == 2
            [point] = chart.find_elements(By.CSS_SELECTOR, "circle.accept-point")
            assert (point.get_attribute("data-day"), point.get_attribute("data-rate")) == (days[0], "1.0000")
            assert chart.size["width"] > 300  # rendered, not just present in the markup
            SCREENSHOT.parent.mkdir(exist_ok=True)
            assert driver.save_screenshot(str(SCREENSHOT))
            assert SCREENSHOT.stat().st_size > 10_000

            low_row.find_element(By.TAG_NAME, "a").click()  # the evidence page of the 1.6 mg/dL call
            assert driver.current_url.endswith(f"/audit/invocations/{stored[0].id}")
            card = driver.find_element(By.CSS_SELECTOR, 'article.card[data-rule="hypomagnesemia"]')
            [fact] = card.find_elements(By.CSS_SELECTOR, "tr.fact")
            cells = [td.text for td in fact.find_elements(By.TAG_NAME, "td")]
            assert cells[:6] == ["lab", "magnesium", "1.6 mg/dL", "", "2026-11-20", "Observation/mg-hi-browser-low/_history/1"]
            assert "Feedback: accepted" in card.text
            summary = driver.find_element(By.ID, "summary").text
            assert "hi-browser-low" in summary and "pt-low" in summary and "Practitioner/dr-1" in summary
            driver.save_screenshot(str(SCREENSHOT.with_name("audit-evidence.png")))
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
