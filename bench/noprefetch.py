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
from datetime import datetime, timezone
from pathlib import Path

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
    error: str | None = None

    @property
    def sum_ms(self) -> float:
        return sum(self.single_ms.values())

    @property
    def slowest_ms(self) -> float:
        return max(self.single_ms.values()) if self.single_ms else float("nan")


def _private_server(tmp: Path) -> tuple[str, "callable"]:
    root = tmp / "fhir-root"
    (root / "scripts").mkdir(parents=True)
    (root / "ci").mkdir()
    shutil.copy(procs.REPO / "scripts" / "fhir-server.sh", root / "scripts")
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
    from cds_service.prefetch.gateway import FhirGateway
    from cds_service.prefetch.templates import render

    with tempfile.TemporaryDirectory(prefix="cds-bench-fhir-") as tmp:
        base = os.environ.get("CDS_TEST_FHIR_BASE", "").rstrip("/")
        stop = None
        if not base:
            base, stop = _private_server(Path(tmp))
        try:
            result = NoPrefetchResult(server=base, observations_loaded=n_observations, runs=runs)
            patient_id = load_patient(base, n_observations)
            app = create_app({"database_url": f"sqlite:///{tmp}/np-audit.sqlite3", "auth_mode": "off",
                              "allow_http_fhir": True, "log_level": "WARNING"})
            svc = app.extensions["cds"]
            service = svc.catalog.get(SERVICE)
            now = datetime.now(timezone.utc)
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
                t0 = time.perf_counter()
                out = gateway.fetch_many(base, None, result.queries, 30)
                wall = (time.perf_counter() - t0) * 1000
                bad = {k: r.error for k, r in out.items() if not r.ok}
                if bad:
                    raise RuntimeError(f"FHIR queries failed: {bad}")
                result.entries = {k: len(r.data.get("entry") or []) if r.data.get("resourceType") == "Bundle" else 1
                                  for k, r in out.items()}
                singles = {}
                for key, query in (result.queries.items() if i % 2 else reversed(list(result.queries.items()))):
                    t0 = time.perf_counter()
                    one = gateway.fetch_many(base, None, {key: query}, 30)[key]
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
            return result
        finally:
            if stop is not None:
                stop()


if __name__ == "__main__":
    import sys
    from dataclasses import asdict

    r = measure(quick="--quick" in sys.argv)
    print(asdict(r), "sum", r.sum_ms, "slowest", r.slowest_ms)
