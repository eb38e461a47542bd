"""Sections 2 and 4: `cds-service serve` under load beside a trivial endpoint; start-up time and memory.

The service runs with its default workers on 127.0.0.1 (CDS_AUTH_MODE=off, a temporary SQLite audit
database). Each concurrency level runs for a fixed time with one thread and one requests.Session per
client; the trivial endpoint gets the same bodies in the same run. Afterwards the audit database must
hold one invocation row per call sent.
"""
from __future__ import annotations

import json
import sqlite3
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from . import procs
from .data import patient_view_request
from .scaling import percentile

SERVICE = "magnesium-patient-view"
FIXTURE_GLOB = "fixtures/requests/*.prefetch.json"  # not *.no-prefetch.json


@dataclass
class LoadRow:
    target: str  # service | trivial
    concurrency: int
    seconds: float
    requests: int
    errors: int
    throughput: float  # requests / s
    p50_ms: float
    p99_ms: float


@dataclass
class HttpResult:
    request_source: str
    bodies: int
    response_bytes: int
    rows: list[LoadRow] = field(default_factory=list)
    sent_to_service: int = 0
    audit_rows: int = 0
    audit_wait_s: float = 0.0
    startup_s: list[float] = field(default_factory=list)
    workers: int = 0
    worker_rss_mb: list[float] = field(default_factory=list)  # after the load
    worker_rss_idle_mb: list[float] = field(default_factory=list)  # right after start-up
    error_samples: list[str] = field(default_factory=list)


def request_bodies() -> tuple[str, list[tuple[str, bytes]]]:
    """(source, [(service id, body)]): the fixture requests when present, else generated equivalents."""
    files = sorted(procs.REPO.glob(FIXTURE_GLOB))
    out = []
    for f in files:
        body = f.read_bytes()
        try:
            hook = json.loads(body).get("hook", "")
        except ValueError:
            continue
        service = {"patient-view": "magnesium-patient-view", "order-select": "magnesium-order-select",
                   "order-sign": "magnesium-order-sign"}.get(hook)
        if service:
            out.append((service, body))
    if out:
        return f"{len(out)} fixture requests ({FIXTURE_GLOB})", out
    sizes = (20, 40, 80)
    gen = [(SERVICE, json.dumps(patient_view_request(n, patient_id=f"bench-{n}")).encode()) for n in sizes]
    return f"generated patient-view requests ({', '.join(map(str, sizes))} Observations; fixtures/requests absent)", gen


def drive(url_for: callable, bodies: list[tuple[str, bytes]], concurrency: int, seconds: float,
          max_requests: int) -> tuple[list[float], int, int, list[str]]:
    """Run `concurrency` clients for `seconds` (and at most max_requests in all)."""
    lat: list[float] = []
    counts = {"sent": 0, "errors": 0}
    samples: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(offset: int) -> None:
        s = requests.Session()
        s.trust_env = False
        i = offset
        while time.perf_counter() < stop_at:
            with lock:
                if counts["sent"] >= max_requests:
                    return
                counts["sent"] += 1
            service, body = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = s.post(url_for(service), data=body, headers={"Content-Type": "application/json"}, timeout=30)
                ok = r.status_code == 200
                _ = r.content  # the whole body is read inside the timed region
                err = None if ok else f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as exc:
                err = f"{type(exc).__name__}"
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                lat.append(ms)
                if err:
                    counts["errors"] += 1
                    if len(samples) < 5:
                        samples.append(err)
        s.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, counts["sent"], counts["errors"], samples


def _row(target: str, c: int, seconds: float, lat: list[float], sent: int, errors: int) -> LoadRow:
    return LoadRow(target, c, seconds, sent, errors, sent / seconds,
                   statistics.median(lat) if lat else float("nan"), percentile(lat, 99))


def count_invocations(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("SELECT COUNT(*) FROM invocation").fetchone()[0]


def measure(levels: tuple[int, ...] = (1, 8, 32), seconds: float = 10.0, quick: bool = False,
            startups: int = 3) -> HttpResult:
    if quick:
        levels, seconds, startups = (1, 4), 1.0, 1
    max_requests = 200_000
    source, bodies = request_bodies()
    with tempfile.TemporaryDirectory(prefix="cds-bench-http-") as tmp:
        tmpd = Path(tmp)
        db = tmpd / "audit.sqlite3"
        env = {"CDS_AUTH_MODE": "off", "CDS_DATABASE_URL": f"sqlite:///{db}", "CDS_LOG_LEVEL": "WARNING",
               "CDS_HOST": "127.0.0.1"}
        cli = str(procs.VENV_BIN / "cds-service")
        result = HttpResult(source, len(bodies), 0)

        # section 4: start-up to the first successful discovery response (fresh process each time)
        for k in range(startups):
            port = procs.free_port()
            t0 = time.perf_counter()
            proc = procs.start([cli, "serve", "--port", str(port)], {**env, "CDS_DATABASE_URL": f"sqlite:///{tmpd}/start-{k}.sqlite3"},
                               tmpd / "serve.log")
            try:
                procs.wait_until_ok(f"http://127.0.0.1:{port}/cds-services", 60, proc)
                result.startup_s.append(time.perf_counter() - t0)
            finally:
                procs.stop(proc)

        port = procs.free_port()
        service = procs.start([cli, "serve", "--port", str(port)], env, tmpd / "serve.log")
        trivial = None
        try:
            procs.wait_until_ok(f"http://127.0.0.1:{port}/cds-services", 60, service)
            workers = procs.children(service.pid)
            result.workers = len(workers)
            result.worker_rss_idle_mb = [procs.rss_mb(p) for p in workers]
            base = f"http://127.0.0.1:{port}"
            # warm every worker, learn the response size
            sizes = []
            s = requests.Session()
            s.trust_env = False
            for i in range(max(8, 4 * len(bodies))):
                svc, body = bodies[i % len(bodies)]
                r = s.post(f"{base}/cds-services/{svc}", data=body, headers={"Content-Type": "application/json"}, timeout=30)
                result.sent_to_service += 1
                if r.status_code != 200:
                    raise RuntimeError(f"warm-up call failed: HTTP {r.status_code} {r.text[:1500]}")
                sizes.append(len(r.content))
            result.response_bytes = int(statistics.mean(sizes))

            tport = procs.free_port()
            trivial = procs.start([str(procs.VENV_BIN / "python"), "-m", "bench.trivial_app", "--port", str(tport),
                                   "--size", str(result.response_bytes)], env, tmpd / "trivial.log")
            procs.wait_until_ok(f"http://127.0.0.1:{tport}/trivial", 60, trivial)
            tbase = f"http://127.0.0.1:{tport}"
            drive(lambda svc: f"{tbase}/trivial", bodies, 2, 0.3, 1000)  # warm-up

            for c in levels:
                lat, sent, errors, samples = drive(lambda svc: f"{base}/cds-services/{svc}", bodies, c, seconds, max_requests)
                result.sent_to_service += sent
                result.error_samples += samples
                result.rows.append(_row("service", c, seconds, lat, sent, errors))
                lat, sent, errors, samples = drive(lambda svc: f"{tbase}/trivial", bodies, c, seconds, max_requests)
                result.error_samples += samples
                result.rows.append(_row("trivial", c, seconds, lat, sent, errors))
            result.worker_rss_mb = [procs.rss_mb(p) for p in procs.children(service.pid)]

            # every invocation must reach the audit store (written in the background: wait for it)
            t0 = time.perf_counter()
            while True:
                result.audit_rows = count_invocations(db)
                if result.audit_rows >= result.sent_to_service or time.perf_counter() - t0 > 60:
                    break
                time.sleep(0.2)
            result.audit_wait_s = time.perf_counter() - t0
        finally:
            if trivial is not None:
                procs.stop(trivial)
            procs.stop(service)
        if result.audit_rows < result.sent_to_service:  # one last look after the graceful stop
            result.audit_rows = count_invocations(db)
    return result


if __name__ == "__main__":
    import sys
    from dataclasses import asdict

    print(json.dumps(asdict(measure(quick="--quick" in sys.argv)), indent=1))
