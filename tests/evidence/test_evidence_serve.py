"""`cds-service serve` (gunicorn, 2 workers, no CDS_EVIDENCE_KEY): every card links to a page any worker opens,
and neither the access log nor the service log shows the token."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cds_service.config import Settings
from cds_service.definitions import load_definitions
from cds_service.fixtures import build_request
from cds_service.knowledge import load_knowledge
from tests.helpers.env import FIXED_NOW
from tests.helpers.processes import free_port as _free_port
from tests.helpers.processes import wait_until_healthy

pytestmark = pytest.mark.processes  # cds-service serve under gunicorn

CLI = str(Path(sys.executable).with_name("cds-service"))


def test_served_links_open_on_every_worker_and_stay_out_of_the_logs(tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({"CDS_DATABASE_URL": f"sqlite:///{tmp_path}/serve.sqlite3", "CDS_WORKERS": "2", "CDS_AUTH_MODE": "off",
                "CDS_PORT": str(port)})
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([CLI, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(base, proc, 60, lambda: log_path.read_text(errors="replace")[-2000:])
            catalog = load_definitions(Settings().hooks_dir, load_knowledge())
            # the fixture's dates are relative to FIXED_NOW; the served clock is today's, so only the link matters here
            body = build_request("mg-refractory-01", "patient-view", catalog, FIXED_NOW)
            cards = requests.post(f"{base}/cds-services/magnesium-patient-view", json=body, timeout=30).json()["cards"]
            assert cards and all(c["links"][0]["url"].startswith(f"{base}/evidence?token=") for c in cards)
            link = cards[0]["links"][0]["url"]
            statuses = []
            for _ in range(12):  # fresh connections: either worker may take each (they share the socket and the key)
                with requests.Session() as s:
                    statuses.append(s.get(link, timeout=30).status_code)
                    time.sleep(0.05)
            assert statuses == [200] * 12, statuses
            assert requests.get(link[:-4] + "AAAA", timeout=30).status_code == 403
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = log_path.read_text(errors="replace")
    assert '"GET /evidence" 200' in text  # the access log has the path, never the query string
    assert link.split("token=")[1] not in text and "token=" not in text
    assert "CDS_EVIDENCE_KEY is not set" in text
