"""Peer comparison: `cds-service serve` against a bare Flask endpoint under the same gunicorn settings.

    .venv/bin/python -m bench.peer                 # ~4 minutes; writes bench/out/peer.json and prints the tables
    .venv/bin/python -m bench.peer --quick         # smoke-sized

The bodies are a realistic chart: Patient, 200 Observations over 100 days (magnesium, potassium,
calcium, creatinine, urine, weight and others; one low magnesium, the latest) and 10
MedicationRequests (about 230 KB), and the same with 1,000 Observations. The bare endpoint
`json.loads` the body and returns one fixed card. Load comes from wrk (Debian package) when installed,
else from a Python client; c1 and c8 rounds are interleaved (bare, service, service-1000, bare, ...),
so that both see the same machine. After the load: audit bytes stored per call and how long the
writer needed to get every answered call into the database (the writer lag).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests

from . import procs
from .data import LOINC, NOW, RXNORM, SNOMED, UCUM, _iso, add_reference_range, bundle, patient

SERVICE = "magnesium-patient-view"
OUT = Path(__file__).resolve().parent / "out"

# (loinc, unit, normal value, reference low, high)
SERIES = [
    ("19123-9", "mg/dL", 2.0, 1.8, 2.4),  # serum magnesium
    ("2823-3", "mmol/L", 4.1, 3.5, 5.1),  # potassium
    ("17861-6", "mg/dL", 9.3, 8.5, 10.5),  # calcium
    ("2160-0", "mg/dL", 0.9, 0.6, 1.2),  # creatinine
    ("98979-8", "mL/min/{1.73_m2}", 78, 60, None),  # eGFR
    ("2345-7", "mg/dL", 95, 70, 99),  # glucose (not read)
    ("718-7", "g/dL", 13.1, 12, 16),  # hemoglobin (not read)
    ("1751-7", "g/dL", 4.1, 3.5, 5.0),  # albumin
    ("29463-7", "kg", 71, None, None),  # weight
    ("6690-2", "10*3/uL", 7.2, 4.5, 11),  # leukocytes (not read)
]
MEDS = [("198211", "omeprazole 20 MG Delayed Release Oral Capsule"), ("310429", "furosemide 20 MG Oral Tablet"),
        ("311945", "magnesium oxide 400 MG Oral Tablet"), ("197770", "lisinopril 10 MG Oral Tablet"),
        ("860975", "metformin hydrochloride 500 MG Oral Tablet"), ("617312", "atorvastatin 20 MG Oral Tablet"),
        ("314076", "lisinopril 5 MG Oral Tablet"), ("308136", "amlodipine 5 MG Oral Tablet"),
        ("866924", "metoprolol succinate 25 MG Extended Release Oral Tablet"), ("310798", "hydrochlorothiazide 25 MG Oral Tablet")]


def observation(i: int, pid: str, n: int) -> dict[str, Any]:
    code, unit, value, low, high = SERIES[i % len(SERIES)]
    when = NOW - timedelta(days=100 * i / n, hours=2)
    if i == 0:  # the newest magnesium is the one low result
        value = 1.3
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": f"obs-{i}", "meta": {"versionId": "1", "lastUpdated": _iso(when + timedelta(hours=2))},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory",
                                  "display": "Laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": code}], "text": code},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": _iso(when), "issued": _iso(when + timedelta(hours=1)),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        "performer": [{"reference": "Organization/lab-1", "display": "Central laboratory"}],
        "note": [{"text": "Specimen received in good condition; analysed on the routine chemistry line."}],
    }
    add_reference_range(obs, low, high, unit)
    return obs


def medication_request(i: int, pid: str) -> dict[str, Any]:
    rxcui, name = MEDS[i % len(MEDS)]
    return {"resourceType": "MedicationRequest", "id": f"mr-{i}", "meta": {"versionId": "1"}, "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxcui, "display": name}], "text": name},
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": _iso(NOW - timedelta(days=200 + 10 * i)),
            "dosageInstruction": [{"text": "once daily", "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                   "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]},
                                   "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]}


def chart_body(n_observations: int, pid: str = "peer-1") -> bytes:
    """The peer request: Patient, ``n`` Observations over 100 days (one low magnesium), 10 MedicationRequests."""
    req = {"hook": "patient-view", "hookInstance": "5b4c3e0e-8a39-4a61-a7a4-5f0e0b1c2d3e",
           "context": {"userId": "Practitioner/peer", "patientId": pid},
           "prefetch": {"patient": patient(pid),
                        "observations": bundle([observation(i, pid, n_observations) for i in range(n_observations)]),
                        "medicationRequests": bundle([medication_request(i, pid) for i in range(10)]),
                        "medicationStatements": bundle([]), "conditions": bundle([])}}
    return json.dumps(req).encode()


@dataclass
class Round:
    target: str  # bare | service | service-1000
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


@dataclass
class PeerResult:
    tool: str
    seconds: float
    rounds: int
    body_bytes: dict[str, int]
    cards: dict[str, int]
    workers: int
    worker_class: str
    runs: list[Round] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)  # worker model comparison
    audit: dict[str, Any] = field(default_factory=dict)
    in_process: dict[str, Any] = field(default_factory=dict)


LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("PEER_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
"""


def wrk_run(url: str, body_path: Path, c: int, seconds: float, lua: Path) -> Round:
    out = subprocess.run(["wrk", "-t", str(min(c, 2)), "-c", str(c), "-d", f"{max(1, round(seconds))}s", "--timeout", "30s",
                          "--latency", "-s", str(lua), url],
                         env={**os.environ, "PEER_BODY": str(body_path)}, capture_output=True, text=True, timeout=seconds + 60).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Round("", c, total, errors, rps, ms("50"), ms("99"))


def python_run(url: str, body: bytes, c: int, seconds: float) -> Round:
    from .http_load import drive
    from .scaling import percentile

    lat, sent, errors, _ = drive(lambda _s: url, [("x", body)], c, seconds, 10_000_000)
    return Round("", c, sent, errors, sent / seconds, statistics.median(lat), percentile(lat, 99))


def serve(kind: str, port: int, env: dict[str, str], log: Path) -> Any:
    if kind == "bare":
        cmd = [str(procs.VENV_BIN / "python"), "-m", "bench.bare_app", "--port", str(port)]
    else:
        cmd = [str(procs.VENV_BIN / "cds-service"), "serve", "--port", str(port)]
    proc = procs.start(cmd, env, log)
    procs.wait_until_ok(f"http://127.0.0.1:{port}/healthz", 90, proc)
    return proc


def db_rows(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("SELECT COUNT(*) FROM invocation").fetchone()[0]


def audit_bytes(db: Path) -> dict[str, Any]:
    """Bytes stored: the rows' own content (every column) + snapshots, and the database file after a checkpoint."""
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cols = [r[1] for r in conn.execute("PRAGMA table_info(invocation)")]
        row_bytes = conn.execute("SELECT SUM(" + " + ".join(f"COALESCE(LENGTH(CAST({c} AS BLOB)), 0)" for c in cols)
                                 + ") FROM invocation").fetchone()[0] or 0
        card_bytes = conn.execute("SELECT SUM(LENGTH(uuid) + LENGTH(service_id) + LENGTH(rule) + LENGTH(indicator) + 32)"
                                  " FROM card").fetchone()[0] or 0
        snap = conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(content)), 0), COALESCE(SUM(raw_bytes), 0)"
                            " FROM record_snapshot").fetchone()
        n = conn.execute("SELECT COUNT(*) FROM invocation").fetchone()[0]
    size = db.stat().st_size
    return {"rows": n, "row_bytes": row_bytes, "card_bytes": card_bytes, "snapshots": snap[0], "snapshot_bytes": snap[1],
            "snapshot_raw_bytes": snap[2], "file_bytes": size,
            "stored_per_call": (row_bytes + card_bytes + snap[1]) / n if n else float("nan")}


def measure(seconds: float = 5.0, rounds: int = 3, quick: bool = False, models: bool = True,
            models_only: bool = False) -> PeerResult:
    if quick:
        seconds, rounds = 1.0, 1
    tool = "wrk" if shutil.which("wrk") else "python"
    workers = os.cpu_count() or 2
    with tempfile.TemporaryDirectory(prefix="cds-bench-peer-") as tmp:
        tmpd = Path(tmp)
        bodies = {"service": chart_body(200), "service-1000": chart_body(1000)}
        bodies["bare"] = bodies["service"]
        paths = {}
        for k, b in bodies.items():
            paths[k] = tmpd / f"{k}.json"
            paths[k].write_bytes(b)
        lua = tmpd / "post.lua"
        lua.write_text(LUA)
        db = tmpd / "audit.sqlite3"
        env = {"CDS_AUTH_MODE": "off", "CDS_DATABASE_URL": f"sqlite:///{db}", "CDS_LOG_LEVEL": "WARNING",
               "CDS_HOST": "127.0.0.1", "CDS_WORKERS": str(workers), "CDS_AUDIT_SPOOL_DIR": str(tmpd / "spool")}
        result = PeerResult(tool, seconds, rounds, {k: len(v) for k, v in bodies.items()}, {}, workers,
                            os.environ.get("CDS_WORKER_CLASS", "buffered"))

        def run(url: str, key: str, c: int) -> Round:
            r = wrk_run(url, paths[key], c, seconds, lua) if tool == "wrk" else python_run(url, bodies[key], c, seconds)
            r.target = key
            return r

        if models_only:
            result.models = compare_models(tmpd, env, paths, bodies, lua, seconds, tool, workers, rounds)
            return result
        sport, bport = procs.free_port(), procs.free_port()
        service = serve("service", sport, env, tmpd / "service.log")
        bare = serve("bare", bport, env, tmpd / "bare.log")
        urls = {"service": f"http://127.0.0.1:{sport}/cds-services/{SERVICE}", "bare": f"http://127.0.0.1:{bport}/cds-services/{SERVICE}"}
        urls["service-1000"] = urls["service"]
        try:
            for key in ("service", "service-1000"):
                r = requests.post(urls[key], data=bodies[key], headers={"Content-Type": "application/json"}, timeout=30)
                r.raise_for_status()
                result.cards[key] = len(r.json()["cards"])
            sent = 2
            for _ in range(rounds):
                for c in (1, 8):
                    for key in ("bare", "service", "service-1000"):
                        r = run(urls[key], key, c)
                        result.runs.append(r)
                        if key != "bare":
                            sent += r.requests
            # the writer after the load: time until every answered call is a row, and what was stored
            t0 = time.perf_counter()
            while db_rows(db) < sent and time.perf_counter() - t0 < 120:
                time.sleep(0.1)
            lag = time.perf_counter() - t0
            ready = requests.get(f"http://127.0.0.1:{sport}/readyz", timeout=10).json()
            result.audit = {"answered": sent, "lag_after_load_s": lag, "readyz_writer": ready["checks"]["auditWriter"],
                            **audit_bytes(db)}
        finally:
            procs.stop(bare)
            procs.stop(service)
        # a unique record per call: the snapshot is not shared (what one call stores when every chart differs)
        result.audit["unique_snapshot_bytes"] = unique_snapshot_bytes(bodies)
        if models:
            result.models = compare_models(tmpd, env, paths, bodies, lua, seconds, tool, workers)
        result.in_process = in_process(bodies["service-1000"], 20 if quick else 60, bodies["service"])
    return result


def unique_snapshot_bytes(bodies: dict[str, bytes]) -> dict[str, int]:
    """Compressed snapshot + compressed cards/facts of one call, for each body (the per-call cost without sharing)."""
    from cds_service import create_app
    from cds_service.audit.compact import SnapshotEncoder, encode_json
    from cds_service.audit.invocation import Invocation
    from cds_service.audit.store import invocation_record
    from cds_service.config import Settings
    from cds_service.services import get_services

    app = create_app(Settings.from_env(database_url="sqlite://", auth_mode="off"), clock=lambda: NOW)
    out = {}
    for key in ("service", "service-1000"):
        outcome = get_services(app).engine.handle(SERVICE, json.loads(bodies[key]))
        outcome.response()  # raises when the call failed
        inv = Invocation(service_id=SERVICE, **outcome.audit_fields())
        meta, raw = invocation_record(inv)
        _, content = SnapshotEncoder().encode(raw)
        out[key] = {"snapshot_raw": len(raw), "snapshot_compressed": len(content),
                    "cards_facts_compressed": len(encode_json({"cards": meta["cards"], "facts": meta["facts"]}))}
    get_services(app).store.close()
    return out


MODELS = (("sync", {"CDS_WORKER_CLASS": "sync"}),
          ("gthread, keep-alive 2 s", {"CDS_WORKER_CLASS": "gthread", "CDS_WORKER_KEEPALIVE_SECONDS": "2"}),
          ("buffered, keep-alive 2 s (default)", {"CDS_WORKER_CLASS": "buffered", "CDS_WORKER_KEEPALIVE_SECONDS": "2"}),
          ("buffered, one call per connection", {"CDS_WORKER_CLASS": "buffered", "CDS_WORKER_KEEPALIVE_SECONDS": "0"}))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare_models(tmpd: Path, env: dict[str, str], paths: dict[str, Path], bodies: dict[str, bytes], lua: Path,
                   seconds: float, tool: str, workers: int, rounds: int = 2) -> list[dict[str, Any]]:
    """The service under each worker model (same workers), c1 and c8, interleaved rounds; at c8 also the
    busiest worker's share of the workers' CPU time (1/workers = an even spread)."""
    out: dict[str, dict[str, list[Any]]] = {}
    for _ in range(rounds):
        for k, (model, extra) in enumerate(MODELS):
            port = procs.free_port()
            e = {**env, **extra, "CDS_DATABASE_URL": f"sqlite:///{tmpd}/models-{k}.sqlite3"}
            proc = serve("service", port, e, tmpd / f"model-{k}.log")
            url = f"http://127.0.0.1:{port}/cds-services/{SERVICE}"
            try:
                for c in (1, 8):
                    pids = procs.children(proc.pid)
                    before = {p: cpu_seconds(p) for p in pids}
                    r = wrk_run(url, paths["service"], c, seconds, lua) if tool == "wrk" else python_run(url, bodies["service"], c, seconds)
                    used = [cpu_seconds(p) - before[p] for p in pids]
                    out.setdefault(model, {}).setdefault(str(c), []).append(r)
                    if c == 8 and sum(used) > 0:
                        out[model].setdefault("share", []).append(max(used) / sum(used))
            finally:
                procs.stop(proc)
    rows = []
    for model, by_c in out.items():
        row: dict[str, Any] = {"model": model, "workers": workers,
                               "c8_busiest_share": statistics.median(by_c.get("share") or [float("nan")])}
        for c in ("1", "8"):
            rs = by_c[c]
            row[f"c{c}_rps"] = statistics.median(r.rps for r in rs)
            row[f"c{c}_p50"] = statistics.median(r.p50_ms for r in rs)
            row[f"c{c}_p99"] = statistics.median(r.p99_ms for r in rs)
            row[f"c{c}_errors"] = sum(r.errors for r in rs)
        rows.append(row)
    return rows


def in_process(body: bytes, runs: int, chart: bytes | None = None) -> dict[str, Any]:
    """A whole in-process patient-view call (Flask test client, audit spooled) against json.loads of the same
    body, interleaved, one process: issue 11's "1,000 Observations <= 1.0x json.loads" line. With ``chart``,
    also what the audit record costs on the response path: the same call with and without it, interleaved."""
    from cds_service import create_app
    from cds_service.app import settle_heap
    from cds_service.config import Settings
    from cds_service.services import get_services

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cds-bench-inproc-") as tmp:
        app = create_app(Settings.from_env(database_url=f"sqlite:///{tmp}/a.sqlite3", auth_mode="off"), clock=lambda: NOW)
        settle_heap()
        client = app.test_client()
        store = get_services(app).store
        spool = store.record_invocation

        def post(data: bytes) -> float:
            t0 = time.perf_counter()
            resp = client.post(f"/cds-services/{SERVICE}", data=data, content_type="application/json")
            assert resp.status_code == 200
            return (time.perf_counter() - t0) * 1000

        calls, loads = [], []
        for i in range(runs + 3):
            c = post(body)
            t1 = time.perf_counter()
            json.loads(body)
            if i >= 3:
                calls.append(c)
                loads.append((time.perf_counter() - t1) * 1000)
        call, load = statistics.median(calls), statistics.median(loads)
        out = {"observations": 1000, "body_bytes": len(body), "runs": runs, "call_ms": call, "loads_ms": load, "ratio": call / load}
        if chart is not None:
            with_audit, without = [], []
            for i in range(2 * runs + 3):
                store.record_invocation = spool
                a = post(chart)
                store.record_invocation = lambda inv: None  # the call without its audit record
                b = post(chart)
                if i >= 3:
                    with_audit.append(a)
                    without.append(b)
            store.record_invocation = spool
            store.flush()
            out["audit_with_ms"], out["audit_without_ms"] = statistics.median(with_audit), statistics.median(without)
        store.close()
    return out


def in_process_typed(body: bytes, runs: int) -> dict[str, Any]:
    """The whole in-process call with the body's Observations decoded straight from bytes (the default) and with
    the plain reading (orjson, the path before issue 11 item 3), each against json.loads, interleaved, one process."""
    from cds_service import create_app
    from cds_service.api import hooks
    from cds_service.app import settle_heap
    from cds_service.config import Settings
    from cds_service.services import get_services

    typed_read = hooks.read_json
    plain_read = lambda request, max_bytes, typed=False: typed_read(request, max_bytes)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="cds-bench-typed-") as tmp:
        app = create_app(Settings.from_env(database_url=f"sqlite:///{tmp}/a.sqlite3", auth_mode="off"), clock=lambda: NOW)
        settle_heap()
        client = app.test_client()
        times: dict[str, list[float]] = {"typed": [], "plain": [], "loads": []}
        try:
            for i in range(runs + 3):
                for mode in ("typed", "plain", "loads"):
                    t0 = time.perf_counter()
                    if mode == "loads":
                        json.loads(body)
                    else:
                        hooks.read_json = typed_read if mode == "typed" else plain_read
                        resp = client.post(f"/cds-services/{SERVICE}", data=body, content_type="application/json")
                        assert resp.status_code == 200
                    if i >= 3:
                        times[mode].append((time.perf_counter() - t0) * 1000)
        finally:
            hooks.read_json = typed_read
            get_services(app).store.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"body_bytes": len(body), "runs": runs, "typed_ms": med["typed"], "plain_ms": med["plain"],
            "loads_ms": med["loads"], "typed_ratio": med["typed"] / med["loads"], "plain_ratio": med["plain"] / med["loads"]}


def in_process_markdown(command: str, quick: bool) -> str:
    """Issue 11 item 3's budget lines: 1,000 Observations <= 1.0x json.loads, 10 Observations <= 1.5 ms."""
    big = in_process_typed(chart_body(1000), 20 if quick else 60)
    small = in_process_typed(chart_body(10), 100 if quick else 400)
    lines = [f"Command: `{command}` (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}); medians of "
             f"{big['runs']} and {small['runs']} interleaved rounds (typed call, plain call, json.loads), one process.", "",
             "| Observations | Body | Call, typed decoding | Call, plain reading | json.loads | Typed / json.loads | Plain / json.loads |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in ((1000, big), (10, small)):
        lines.append(f"| {n:,} | {r['body_bytes'] / 1024:.0f} KB | {r['typed_ms']:.2f} ms | {r['plain_ms']:.2f} ms | "
                     f"{r['loads_ms']:.2f} ms | {r['typed_ratio']:.2f}x | {r['plain_ratio']:.2f}x |")
    lines += ["", "| Budget line | Measured | Limit | |", "|---|---:|---:|---|",
              f"| 1,000 Observations in-process call <= 1.0x json.loads | {big['typed_ratio']:.2f}x | 1.0x | "
              f"{'pass' if big['typed_ratio'] <= 1.0 else 'FAIL'} |",
              f"| 10 Observations in-process call <= 1.5 ms | {small['typed_ms']:.2f} ms | 1.5 ms | "
              f"{'pass' if small['typed_ms'] <= 1.5 else 'FAIL'} |"]
    return "\n".join(lines)


def median_of(runs: list[Round], target: str, c: int, attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs if r.target == target and r.concurrency == c)


def budget_lines(res: PeerResult) -> list[tuple[str, float, float, bool]]:
    """(line, measured ratio, limit, pass)."""
    m = lambda t, c, a: median_of(res.runs, t, c, a)  # noqa: E731
    lines = [
        ("c8 throughput >= 0.8x bare", m("service", 8, "rps") / m("bare", 8, "rps"), 0.8, None),
        ("c1 p50 <= 1.5x bare", m("service", 1, "p50_ms") / m("bare", 1, "p50_ms"), 1.5, None),
        ("c8 p99 <= 2x bare", m("service", 8, "p99_ms") / m("bare", 8, "p99_ms"), 2.0, None),
    ]
    out = [(name, ratio, limit, ratio >= limit if ">=" in name else ratio <= limit) for name, ratio, limit, _ in lines]
    out.append(("1,000 Observations in-process call <= 1.0x json.loads", res.in_process["ratio"], 1.0, res.in_process["ratio"] <= 1.0))
    return out


def markdown(res: PeerResult, command: str) -> str:
    m = lambda t, c, a: median_of(res.runs, t, c, a)  # noqa: E731
    lines = [f"Command: `{command}` ({res.tool}, {res.seconds:.0f} s per run, {res.rounds} interleaved rounds, "
             f"{res.workers} workers, worker model `{res.worker_class}`, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})", "",
             f"Bodies: {res.body_bytes['service'] / 1024:.0f} KB (200 Observations, {res.cards.get('service', 0)} cards), "
             f"{res.body_bytes['service-1000'] / 1024:.0f} KB (1,000 Observations, {res.cards.get('service-1000', 0)} cards).", "",
             "| | c1 req/s | c1 p50 | c1 p99 | c8 req/s | c8 p50 | c8 p99 | errors |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in ("bare", "service", "service-1000"):
        errs = sum(r.errors for r in res.runs if r.target == t)
        lines.append(f"| {t} | {m(t, 1, 'rps'):.0f} | {m(t, 1, 'p50_ms'):.1f} ms | {m(t, 1, 'p99_ms'):.1f} ms | {m(t, 8, 'rps'):.0f} | "
                     f"{m(t, 8, 'p50_ms'):.1f} ms | {m(t, 8, 'p99_ms'):.1f} ms | {errs} |")
    lines += ["", "| Budget line | Measured | Limit | |", "|---|---:|---:|---|"]
    for name, ratio, limit, ok in budget_lines(res):
        lines.append(f"| {name} | {ratio:.2f}x | {limit:.1f}x | {'pass' if ok else 'FAIL'} |")
    a = res.audit
    u = a.get("unique_snapshot_bytes", {})
    lines += ["", f"Audit after the load: {a['rows']} rows for {a['answered']} answered calls; every answered call was a row "
              f"{a['lag_after_load_s']:.2f} s after the load ended (writer lag); /readyz then: queued {a['readyz_writer']['queued']}, "
              f"lag {a['readyz_writer']['lagSeconds']} s.", "",
              f"Stored per call: {a['stored_per_call'] / 1024:.2f} KB on average (rows {a['row_bytes'] / 1024:.0f} KB, card rows "
              f"{a['card_bytes'] / 1024:.0f} KB, {a['snapshots']} distinct snapshots {a['snapshot_bytes'] / 1024:.0f} KB from "
              f"{a['snapshot_raw_bytes'] / 1024:.0f} KB of JSON); database file {a['file_bytes'] / 1024 / 1024:.1f} MB.", ""]
    for key, label in (("service", "200"), ("service-1000", "1,000")):
        if key in u:
            x = u[key]
            per = x["snapshot_compressed"] + x["cards_facts_compressed"]
            lines.append(f"- {label} Observations, every chart different (no snapshot shared): snapshot "
                         f"{x['snapshot_raw'] / 1024:.0f} KB -> {x['snapshot_compressed'] / 1024:.1f} KB, cards+facts "
                         f"{x['cards_facts_compressed'] / 1024:.1f} KB compressed: about {per / 1024:.1f} KB per call "
                         "plus the row's columns.")
    if res.models:
        lines += ["", *models_lines(res)]
    ip = res.in_process
    lines += ["", f"In-process, 1,000 Observations ({ip['body_bytes'] / 1024:.0f} KB), median of {ip['runs']} interleaved: "
              f"call {ip['call_ms']:.1f} ms, json.loads {ip['loads_ms']:.1f} ms, ratio {ip['ratio']:.2f}x."]
    if "audit_with_ms" in ip:
        share = (ip["audit_with_ms"] - ip["audit_without_ms"]) / ip["audit_with_ms"]
        lines.append(f"The audit record on the response path (snapshot, spool append), 200 Observations, interleaved: call "
                     f"{ip['audit_with_ms']:.2f} ms with it, {ip['audit_without_ms']:.2f} ms without ({share:.0%} of the call).")
    return "\n".join(lines)


def models_lines(res: PeerResult) -> list[str]:
    lines = ["Worker models (the service, 200 Observations, same workers, median of interleaved rounds; busiest "
             "worker = its share of the workers' CPU time at c8, 0.50 is an even spread over 2):", "",
             "| model | c1 req/s | c1 p50 | c8 req/s | c8 p50 | c8 p99 | busiest worker | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res.models:
        lines.append(f"| {r['model']} | {r['c1_rps']:.0f} | {r['c1_p50']:.1f} ms | {r['c8_rps']:.0f} | {r['c8_p50']:.1f} ms | "
                     f"{r['c8_p99']:.1f} ms | {r['c8_busiest_share']:.2f} | {r['c1_errors'] + r['c8_errors']} |")
    return lines


def models_markdown(res: PeerResult, command: str) -> str:
    head = (f"Command: `{command}` ({res.tool}, {res.seconds:.0f} s per run, {res.rounds} interleaved rounds, {res.workers} workers, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    return "\n".join([head, "", *models_lines(res)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-models", action="store_true", help="leave out the worker model comparison")
    p.add_argument("--models-only", action="store_true", help="only the worker model comparison")
    p.add_argument("--in-process-only", action="store_true",
                   help="only the in-process call against json.loads (1,000 and 10 Observations), with and without the typed decoding")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.in_process_only:
        text = in_process_markdown("python -m bench.peer " + " ".join(argv if argv is not None else sys.argv[1:]), args.quick)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "peer-in-process.md").write_text(text + "\n")
        print(text)
        return 0
    res = measure(args.seconds, args.rounds, args.quick, models=not args.no_models, models_only=args.models_only)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "peer-models" if args.models_only else "peer"
    (args.out / f"{name}.json").write_text(json.dumps(asdict(res), indent=1, default=str))
    if args.models_only:
        text = models_markdown(res, "python -m bench.peer " + " ".join(argv if argv is not None else sys.argv[1:]))
        (args.out / f"{name}.md").write_text(text + "\n")
        print(text)
        return 0
    text = markdown(res, "python -m bench.peer " + " ".join(argv if argv is not None else sys.argv[1:]))
    (args.out / "peer.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
