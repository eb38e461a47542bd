"""Section 1: in-process handling time against request size, beside json.loads of the same body.

Measured through the Flask test client (so the HTTP layer's body checks and JSON parse, the
engine, the cards and the response serialisation are all inside the figure). The audit store
writes in a background thread; it is flushed after each call outside the timed region and its
cost is reported on its own, so one call's write does not land in the next call's time.
"""
from __future__ import annotations

import gc
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .data import NOW, patient_view_request

SERVICE = "magnesium-patient-view"
SIZES = (10, 100, 1000, 5000)


@dataclass
class ScalingRow:
    observations: int
    resources: int
    body_bytes: int
    runs: int
    median_ms: float
    p99_ms: float
    loads_median_ms: float
    ratio: float  # median handling / median json.loads
    us_per_observation: float
    audit_write_ms: float
    cards: int


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def make_app(db_dir: Path):
    from cds_service import create_app
    from cds_service.config import Settings

    settings = Settings.from_env(database_url=f"sqlite:///{db_dir}/scaling-audit.sqlite3", auth_mode="off",
                                 # 5,000 Observations is ~5.7 MB: above the 5 MB default request limit
                                 max_body_bytes=32 * 1024 * 1024)
    app = create_app(settings, clock=lambda: NOW)
    return app


def runs_for(n: int, quick: bool) -> int:
    if quick:
        return 3
    return {10: 400, 100: 300, 1000: 100, 5000: 30}.get(n, 50)


def measure(sizes: tuple[int, ...] = SIZES, quick: bool = False) -> list[ScalingRow]:
    """Median/p99 per size, with the app's heap settled after start-up exactly as ``cds-service serve`` does."""
    from cds_service.app import settle_heap
    from cds_service.services import get_services

    rows = []
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmp:
        app = make_app(Path(tmp))
        settle_heap()
        store = get_services(app).store
        client = app.test_client()
        for n in sizes:
            req = patient_view_request(n)
            body = json.dumps(req).encode()
            resources = sum(len(v.get("entry", [])) if v.get("resourceType") == "Bundle" else 1 for v in req["prefetch"].values())
            runs = runs_for(n, quick)
            cards = 0

            def call(body: bytes = body) -> None:
                nonlocal cards
                resp = client.post(f"/cds-services/{SERVICE}", data=body, content_type="application/json")
                if resp.status_code != 200:
                    raise RuntimeError(f"bench request failed: {resp.status_code} {resp.get_data(as_text=True)[:300]}")
                cards = len(resp.get_json()["cards"])

            for _ in range(2 if quick else 5):  # warm-up
                call()
                store.flush()
            handle, writes = [], []
            gc.collect()
            loads = []
            for _ in range(runs):  # interleaved with json.loads, so that both see the same machine state
                t0 = time.perf_counter()
                call()
                t1 = time.perf_counter()
                store.flush()
                writes.append((time.perf_counter() - t1) * 1000)
                handle.append((t1 - t0) * 1000)
                t2 = time.perf_counter()
                json.loads(body)
                loads.append((time.perf_counter() - t2) * 1000)
            med, lmed = statistics.median(handle), statistics.median(loads)
            rows.append(ScalingRow(n, resources, len(body), runs, med, percentile(handle, 99), lmed, med / lmed,
                                   med * 1000 / n, statistics.median(writes), cards))
        store.close()
    return rows


if __name__ == "__main__":
    import sys

    for r in measure(quick="--quick" in sys.argv):
        print(asdict(r))
