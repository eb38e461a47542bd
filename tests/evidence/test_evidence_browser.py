"""The evidence page in real headless chromium at 1366x768: opened from a card's link (also from a page on another
origin, as from the CDS Hooks sandbox), one chart point per magnesium value, the thresholds drawn where their values
are, printable; tampered and expired links get the 403 page. Saves full-page screenshots to test-artifacts/
(untracked; docs/screenshots/ holds the copies the README shows)."""
from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests

from cds_service.fixtures import SERVICE_FOR_HOOK, build_request
from cds_service.services import get_services
from tests.audit.helpers import rows, serve
from tests.evidence.conftest import KEY, card_of
from tests.helpers.env import FIXED_NOW

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WIDTH, HEIGHT = 1366, 768
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--window-size={WIDTH},{HEIGHT}"]


@pytest.fixture
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = os.environ.get("CDS_TEST_CHROMIUM", "/usr/bin/chromium")
    chromedriver = os.environ.get("CDS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
    for name, path in (("chromium (CDS_TEST_CHROMIUM)", chromium), ("chromedriver (CDS_TEST_CHROMEDRIVER)", chromedriver)):
        if not Path(path).is_file():
            pytest.fail(f"{name} not found at {path}: apt-get install -y --no-install-recommends chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="evidence-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _call(base: str, app, scenario: str, hook: str) -> dict:
    body = build_request(scenario, hook, get_services(app).catalog, FIXED_NOW)
    resp = requests.post(f"{base}/cds-services/{SERVICE_FOR_HOOK[hook]}", json=body, timeout=30)
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()


def _full_page_screenshot(d, path: Path) -> None:
    """The whole page at 1366 px wide (CDP: beyond the viewport), as a PNG file."""
    height = d.execute_script("return document.documentElement.scrollHeight")
    shot = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                        "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}})
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 30_000


def _check_chart(d, magnesium: list[dict], knowledge) -> None:
    """One point per magnesium value at its date, thresholds at their values, all rendered in the viewport's width."""
    from selenium.webdriver.common.by import By

    chart = d.find_element(By.ID, "evidence-chart")
    assert WIDTH * 0.8 < chart.size["width"] <= WIDTH
    assert d.execute_script("return document.documentElement.scrollWidth") <= WIDTH  # no sideways scrolling
    panel = d.find_element(By.CSS_SELECTOR, 'g.panel[data-analyte="magnesium"]')
    points = panel.find_elements(By.CSS_SELECTOR, "circle.point")
    assert len(points) == len(magnesium)
    assert sorted(p.get_attribute("data-date") for p in points) == sorted(m["effective"][:10] for m in magnesium)
    assert all(p.is_displayed() and p.size["width"] > 5 for p in points)
    lines = {t.get_attribute("data-key"): t for t in panel.find_elements(By.CSS_SELECTOR, "line.threshold")}
    assert set(lines) == {"magnesium_low", "magnesium_severe", "magnesium_ctcae_g3", "magnesium_ctcae_g4"}
    ys = {k: float(t.get_attribute("y1")) for k, t in lines.items()}
    for k, t in lines.items():
        assert float(t.get_attribute("data-value")) == float(knowledge.threshold(k).value)
        assert t.rect["width"] > 0.8 * chart.size["width"]  # drawn across the panel
    by_value = sorted(lines, key=lambda k: knowledge.threshold(k).value)
    assert sorted(lines, key=lambda k: -ys[k]) == by_value  # higher value, higher on screen
    for p in points:  # each point on the right side of the severe line
        above = float(p.get_attribute("cy")) < ys["magnesium_severe"]
        assert above == (float(p.get_attribute("data-value")) > knowledge.threshold("magnesium_severe").value)
        assert p.find_element(By.TAG_NAME, "title").get_attribute("textContent").startswith(p.get_attribute("data-date"))


def test_refractory_patient_view_card_opens_its_evidence(app_factory, driver):
    from selenium.webdriver.common.by import By

    app = app_factory(evidence_key=KEY)
    knowledge = get_services(app).knowledge
    with serve(app) as base:
        response = _call(base, app, "mg-refractory-01", "patient-view")
        card = card_of(response, "refractory-hypomagnesemia")
        [row] = rows(app)
        driver.get(card["links"][0]["url"])
        assert driver.title.startswith(card["summary"])
        _check_chart(driver, row.record_snapshot["labs"]["magnesium"], knowledge)
        assert [p.get_attribute("data-analyte") for p in driver.find_elements(By.CSS_SELECTOR, "g.panel")] == \
            ["magnesium", "calcium", "creatinine", "kidney-function"]
        bars = driver.find_elements(By.CSS_SELECTOR, "g.bar")
        assert sorted(b.get_attribute("data-group") for b in bars) == ["magnesium-supplement", "vitamin-d-analogue"]
        assert all(b.find_element(By.CSS_SELECTOR, "rect.med").rect["width"] > 50 for b in bars)
        assert "Cockcroft-Gault" in driver.find_element(By.ID, "derived").text
        assert "Stepwise pathway" in driver.find_element(By.ID, "card-text").text  # the card's Markdown, rendered
        _full_page_screenshot(driver, ARTIFACTS / "evidence-refractory.png")

        # printable: the print stylesheet keeps the chart, and chromium prints the page to a PDF
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        assert driver.find_element(By.ID, "evidence-chart").size["width"] > 600
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        pdf = base64.b64decode(driver.execute_cdp_cmd("Page.printToPDF", {"printBackground": True,
                                                                          "preferCSSPageSize": True})["data"])
        assert pdf.startswith(b"%PDF-") and len(pdf) > 20_000


def test_order_sign_card_opens_its_evidence(app_factory, driver):
    from selenium.webdriver.common.by import By

    app = app_factory(evidence_key=KEY)
    with serve(app) as base:
        response = _call(base, app, "mg-cisplatin-08", "order-sign")
        card = card_of(response, "order-iv-magnesium")
        [row] = rows(app)
        driver.get(card["links"][0]["url"])
        _check_chart(driver, row.record_snapshot["labs"]["magnesium"], get_services(app).knowledge)
        hollow = driver.find_elements(By.CSS_SELECTOR, 'g.panel[data-analyte="magnesium"] circle.point.not-counted')
        assert [p.get_attribute("data-date") for p in hollow] == ["2026-10-26"]
        assert "superseded" in hollow[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")
        drafts = driver.find_elements(By.CSS_SELECTOR, "g.bar.draft")
        assert len(drafts) == 2 and all("drafted in this call" in d.text for d in drafts)
        _full_page_screenshot(driver, ARTIFACTS / "evidence-order-sign.png")


def _launcher(link: str):
    """A page on another origin with the card's link, as the CDS Hooks sandbox shows it (opens a new tab)."""
    html = (f'<!doctype html><title>sandbox</title><a id="open" href="{link}" target="_blank" '
            f'rel="noopener noreferrer">Magnesium trend and evidence</a>').encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(html)))])
        return [html]
    return app


def test_link_opens_from_another_origin_and_bad_links_get_403(app_factory, driver):
    from selenium.webdriver.common.by import By

    app = app_factory(evidence_key=KEY)
    signer = get_services(app).evidence_signer
    with serve(app) as base:
        response = _call(base, app, "mg-refractory-01", "patient-view")
        card = card_of(response, "femg-needed")
        link = card["links"][0]["url"]
        [row] = rows(app)
        with serve(_launcher(link.replace("&", "&amp;"))) as sandbox:
            assert sandbox.split(":")[-1] != base.split(":")[-1]  # another origin (port)
            driver.get(sandbox)
            driver.find_element(By.ID, "open").click()
            deadline = time.monotonic() + 10
            while len(driver.window_handles) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            driver.switch_to.window(driver.window_handles[-1])
            _check_chart(driver, row.record_snapshot["labs"]["magnesium"], get_services(app).knowledge)
            assert driver.current_url == link
            driver.close()
            driver.switch_to.window(driver.window_handles[0])

        header, payload, sig = link.split("token=", 1)[1].split(".")
        tampered = f"{base}/evidence?token={header}.{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{sig}"
        expired = f"{base}/evidence?token=" + signer.token(card["uuid"], row.received_at, now=time.time() - 3700)
        for url, heading in ((tampered, "This link is not valid"), (expired, "This link has expired")):
            assert requests.get(url, timeout=10).status_code == 403
            driver.get(url)
            assert driver.find_element(By.TAG_NAME, "h1").text == heading
            assert not driver.find_elements(By.ID, "evidence-chart")
            assert "mg-refractory-01" not in driver.page_source and card["summary"] not in driver.page_source
