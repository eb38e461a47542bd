"""Section 3: no prefetch: the service's parallel fetch against a real FHIR server, beside each query alone.

Uses CDS_TEST_FHIR_BASE when set; otherwise starts a private sekmet-fhir server (the repository's
scripts/fhir-server.sh, run from a temporary root on a free port so it never touches a shared one).
The bench patient is loaded with one transaction Bundle under a fresh id. The queries are the service's
own prefetch templates, rendered as the engine renders them; every run alternates the parallel fetch
(FhirGateway.fetch_many, as the engine calls it) with each query fetched alone.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from . import procs
from .data import resources

SERVICE = "magnesium-patient-view"


@dataclass
class NoPrefetchResult:
    server: str
    observations_loaded: int
    runs: int
    queries: dict[str, str] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    parallel_ms: float = 0.0  # median wall time of fetch_many over all queries
    single_ms: dict[str, float] = field(default_factory=dict)  # median per query fetched alone
    hook_ms: float = 0.0  # median of a whole no-prefetch hook call in-process (fetch + build + cards)
    # the same answers replayed by a loopback server that answers concurrently, each after its query's
    # measured latency alone: isolates the gateway's parallelism from a server that serialises requests
    replay_parallel_ms: float = 0.0
    error: str | None = None

    @property
    def sum_ms(self) -> float:
        return sum(self.single_ms.values())

    @property
    def slowest_ms(self) -> float:
        return max(self.single_ms.values()) if self.single_ms else float("nan")


def _private_server(tmp: Path) -> tuple[str, callable]:
    root = tmp / "fhir-root"
    (root / "scripts").mkdir(parents=True)
    (root / "ci").mkdir()
    for script in ("fhir-server.sh", "progress.sh"):  # fhir-server.sh sources progress.sh
        shutil.copy(procs.REPO / "scripts" / script, root / "scripts")
    shutil.copy(procs.REPO / "ci" / "fhir-server-constraints.txt", root / "ci")
    env = {**os.environ, "CDS_TEST_FHIR_PORT": str(procs.free_port()),
           "CDS_FHIR_VENV": str(procs.REPO / ".cache" / "fhir-venv")}
    out = subprocess.run(["bash", str(root / "scripts" / "fhir-server.sh"), "start"], env=env, capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"could not start a FHIR server: {out.stderr[-800:]}")
    base = out.stdout.strip().splitlines()[-1]

    def stop() -> None:
        subprocess.run(["bash", str(root / "scripts" / "fhir-server.sh"), "stop"], env=env, capture_output=True, timeout=60)

    return base, stop


def load_patient(base: str, n_observations: int) -> str:
    patient_id = f"bench-np-{uuid.uuid4().hex[:10]}"
    res = resources(n_observations, patient_id=patient_id)
    entries = []
    for group in res.values():
        for r in group:
            r = dict(r)
            if r["resourceType"] != "Patient":
                r["id"] = f"{patient_id}-{r['id']}"
            entries.append({"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    r = requests.post(base, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=120)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"loading the bench patient failed: HTTP {r.status_code} {r.text[:400]}")
    return patient_id


def measure(n_observations: int = 150, runs: int = 15, quick: bool = False) -> NoPrefetchResult:
    if quick:
        n_observations, runs = 20, 2
    from cds_service import create_app
    from cds_service.config import Settings
    from cds_service.prefetch.deadline import Deadline
    from cds_service.prefetch.gateway import FhirGateway
    from cds_service.prefetch.templates import render
    from cds_service.services import get_services

    with tempfile.TemporaryDirectory(prefix="cds-bench-fhir-") as tmp:
        base = os.environ.get("CDS_TEST_FHIR_BASE", "").rstrip("/")
        stop = None
        if not base:
            base, stop = _private_server(Path(tmp))
        try:
            result = NoPrefetchResult(server=base, observations_loaded=n_observations, runs=runs)
            patient_id = load_patient(base, n_observations)
            app = create_app(Settings.from_env(database_url=f"sqlite:///{tmp}/np-audit.sqlite3", auth_mode="off",
                                               allow_http_fhir=True))
            svc = get_services(app)
            service = svc.catalog.get(SERVICE)
            now = datetime.now(UTC)
            context = {"patientId": patient_id, "userId": "Practitioner/bench"}
            for key, p in service.prefetch.items():
                result.queries[key] = render(svc.catalog.expand_knowledge_tokens(service, p.template, now), context)
            s = svc.settings
            gateway = FhirGateway(call_timeout=s.fetch_call_timeout_seconds * 4, retries=0, page_limit=s.fetch_page_limit)
            parallel: list[float] = []
            single: dict[str, list[float]] = {k: [] for k in result.queries}
            hook: list[float] = []
            client = app.test_client()
            body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": base, "context": context}
            for i in range(runs + 1):  # the first round warms connections and the server's caches
                wall, out = _parallel_fetch(gateway, base, result.queries)
                result.entries = {k: len(r.data.get("entry") or []) if r.data.get("resourceType") == "Bundle" else 1
                                  for k, r in out.items()}
                singles = {}
                for key, query in (result.queries.items() if i % 2 else reversed(list(result.queries.items()))):
                    t0 = time.perf_counter()
                    one = gateway.fetch_many(base, None, {key: query}, Deadline.start(30))[key]
                    singles[key] = (time.perf_counter() - t0) * 1000
                    if not one.ok:
                        raise RuntimeError(f"FHIR query {key} failed: {one.error}")
                t0 = time.perf_counter()
                resp = client.post(f"/cds-services/{SERVICE}", json=body)
                hook_ms = (time.perf_counter() - t0) * 1000
                if resp.status_code != 200:
                    raise RuntimeError(f"no-prefetch hook call failed: HTTP {resp.status_code} {resp.get_data(as_text=True)[:300]}")
                if i == 0:
                    continue
                parallel.append(wall)
                hook.append(hook_ms)
                for k, v in singles.items():
                    single[k].append(v)
            svc.store.close()
            result.parallel_ms = statistics.median(parallel)
            result.single_ms = {k: statistics.median(v) for k, v in single.items()}
            result.hook_ms = statistics.median(hook)
            result.replay_parallel_ms = _replay(gateway, result, {k: r.data for k, r in out.items()}, runs)
            return result
        finally:
            if stop is not None:
                stop()


def _parallel_fetch(gateway: Any, base: str, queries: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """(wall ms, results) of one parallel fetch of every query, as the engine does it; any failure is fatal."""
    from cds_service.prefetch.deadline import Deadline

    t0 = time.perf_counter()
    out = gateway.fetch_many(base, None, queries, Deadline.start(30))
    wall = (time.perf_counter() - t0) * 1000
    bad = {k: r.error for k, r in out.items() if not r.ok}
    if bad:
        raise RuntimeError(f"FHIR queries against {base} failed: {bad}")
    return wall, out


def _replay(gateway: Any, result: NoPrefetchResult, answers: dict[str, Any], runs: int) -> float:
    """Median wall time of the parallel fetch against a threaded loopback server that returns the FHIR
    server's own answers, each after that query's server-side time: its latency alone against the FHIR server
    minus its latency alone against this server with no delay (our client's own cost, counted once)."""
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    from cds_service.prefetch.deadline import Deadline

    by_type = {}  # each key asks for its own resource type: answer by the path's first segment after /fhir/
    for key, query in result.queries.items():
        rtype = query.split("?")[0].split("/")[0]
        by_type[rtype] = [_json.dumps(answers[key]).encode(), 0.0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            rtype = urlsplit(self.path).path.split("/fhir/", 1)[-1].split("/")[0]
            body, delay = by_type.get(rtype, (b'{"resourceType":"OperationOutcome","issue":[]}', 0.0))
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    try:
        for key, query in result.queries.items():  # our own cost per query, with an instant server
            own = []
            for _ in range(runs + 1):
                t0 = time.perf_counter()
                gateway.fetch_many(base, None, {key: query}, Deadline.start(30))
                own.append((time.perf_counter() - t0) * 1000)
            by_type[query.split("?")[0].split("/")[0]][1] = max(0.0, result.single_ms[key] - statistics.median(own[1:])) / 1000
        walls = []
        for i in range(runs + 1):
            wall, _ = _parallel_fetch(gateway, base, result.queries)
            if i:
                walls.append(wall)
        return statistics.median(walls)
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    import sys
    from dataclasses import asdict

    r = measure(quick="--quick" in sys.argv)
    print(asdict(r), "sum", r.sum_ms, "slowest", r.slowest_ms)
