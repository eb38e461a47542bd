"""Markdown report and PNG chart from the measured figures."""
from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .http_load import HttpResult
from .noprefetch import NoPrefetchResult
from .scaling import ScalingRow

SECTIONS = ("## Budget", "## 1. Scaling", "## 2. HTTP under the production server", "## 3. No prefetch",
            "## 4. Start-up and memory")


@dataclass
class Budget:
    line: str
    measured: str
    ok: bool | None  # None = not measured in this run


def budgets(scaling: list[ScalingRow], http: HttpResult | None, nopf: NoPrefetchResult | None) -> list[Budget]:
    out: list[Budget] = []
    by_n = {r.observations: r for r in scaling}
    r = by_n.get(1000)
    if r:
        out.append(Budget("Scaling: 1,000 Observations <= 4 x json.loads of the body", f"{r.ratio:.2f} x", r.ratio <= 4))
        out.append(Budget("Scaling: 1,000 Observations median < 25 ms", f"{r.median_ms:.1f} ms", r.median_ms < 25))
    else:
        out.append(Budget("Scaling: 1,000 Observations (not in this run)", "-", None))
    big = [x for x in scaling if x.observations >= 100]
    if len(big) >= 2:
        first, last = big[0], big[-1]
        growth = last.us_per_observation / first.us_per_observation
        out.append(Budget(f"Scaling: linear or better (time per Observation at {last.observations:,} vs {first.observations:,})",
                          f"{growth:.2f} x", growth <= 1.25))
    if http is not None:
        svc8 = next((x for x in http.rows if x.target == "service" and x.concurrency == 8), None)
        tri8 = next((x for x in http.rows if x.target == "trivial" and x.concurrency == 8), None)
        if svc8 and tri8:
            out.append(Budget("HTTP: p99 < 50 ms at concurrency 8, full prefetch", f"{svc8.p99_ms:.1f} ms", svc8.p99_ms < 50))
            share = svc8.throughput / tri8.throughput
            out.append(Budget("HTTP: throughput >= 50 % of the trivial endpoint's (c=8)", f"{share:.0%}", share >= 0.5))
        else:
            out.append(Budget("HTTP at concurrency 8 (not in this run)", "-", None))
        errors = sum(x.errors for x in http.rows)
        out.append(Budget("HTTP: no errors", str(errors), errors == 0))
        out.append(Budget("Load: every invocation reached the audit store", f"{http.audit_rows} / {http.sent_to_service}",
                          http.audit_rows == http.sent_to_service))
        if http.startup_s:
            out.append(Budget("Start-up to first discovery response < 3 s", f"{max(http.startup_s):.2f} s (worst of {len(http.startup_s)})",
                              max(http.startup_s) < 3))
        if http.worker_rss_mb:
            out.append(Budget("Memory per worker < 150 MB (after the load)", f"{max(http.worker_rss_mb):.0f} MB",
                              max(http.worker_rss_mb) < 150))
    if nopf is not None:
        if nopf.error:
            out.append(Budget("No prefetch: within 1.5 x the slowest single query", f"not measured: {nopf.error}", None))
        else:
            ratio = nopf.parallel_ms / nopf.slowest_ms
            out.append(Budget("No prefetch: parallel fetch within 1.5 x the slowest single query",
                              f"{ratio:.2f} x ({nopf.parallel_ms:.1f} ms vs {nopf.slowest_ms:.1f} ms; sum {nopf.sum_ms:.1f} ms)",
                              ratio <= 1.5))
            if nopf.replay_parallel_ms:
                replay = nopf.replay_parallel_ms / nopf.slowest_ms
                out.append(Budget("No prefetch, same answers and latencies from a server that answers concurrently: "
                                  "within 1.5 x the slowest query",
                                  f"{replay:.2f} x ({nopf.replay_parallel_ms:.1f} ms vs {nopf.slowest_ms:.1f} ms)",
                                  replay <= 1.5))
    return out


def _mark(ok: bool | None) -> str:
    return "pass" if ok else ("not measured" if ok is None else "**FAIL**")


def write(out_dir: Path, *, command: str, scaling: list[ScalingRow], http: HttpResult | None,
          nopf: NoPrefetchResult | None, notes: list[str], before: list[ScalingRow] | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = chart_png(out_dir / "report.png", scaling, http)
    L: list[str] = []
    L += ["# Benchmark report", "",
          f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `{command}` on {platform.node()} "
          f"({platform.python_implementation()} {platform.python_version()}, {_cpus()} CPUs, "
          f"load average at start {notes[0] if notes else '?'}).",
          "Figures are wall-clock on a shared machine; ratios are measured in the same run and are the figures to trust.", ""]
    L += ["## Budget", "", "| Budget line | Measured | Result |", "|---|---|---|"]
    L += [f"| {b.line} | {b.measured} | {_mark(b.ok)} |" for b in budgets(scaling, http, nopf)]
    L += ["", f"![chart]({chart.name})", ""]

    L += ["## 1. Scaling", "",
          "In-process through the Flask test client: the HTTP layer's body checks and `json.loads`, the engine (validation, "
          "record building, rules, cards) and the response serialisation are inside the figure. The audit write happens on the "
          "store's background thread; it is flushed after each call outside the timed region and shown on its own. "
          "Requests: generated patient-view calls (bench/data.py) whose prefetch holds N Observations (LOINC codes from the "
          "knowledge value sets in mixed units, 30 % other analytes, 15 % older than the lookback, 2 % entered-in-error) "
          "and N/20 each of MedicationRequests, MedicationStatements and Conditions.", "",
          "| Observations | Resources | Body | Runs | Median | p99 | json.loads median | Ratio to json.loads | Per Observation "
          "| Audit write (background) | Cards |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in scaling:
        L.append(f"| {r.observations:,} | {r.resources:,} | {r.body_bytes / 1024:,.0f} KiB | {r.runs} | {r.median_ms:.2f} ms | "
                 f"{r.p99_ms:.2f} ms | {r.loads_median_ms:.2f} ms | {r.ratio:.2f} x | {r.us_per_observation:.1f} µs | "
                 f"{r.audit_write_ms:.1f} ms | {r.cards} |")
    if before:
        L += ["", "Before the hot-path changes (same command, same machine, earlier run):", "",
              "| Observations | Median | p99 | json.loads median | Ratio |", "|---:|---:|---:|---:|---:|"]
        L += [f"| {r.observations:,} | {r.median_ms:.2f} ms | {r.p99_ms:.2f} ms | {r.loads_median_ms:.2f} ms | {r.ratio:.2f} x |"
              for r in before]
    L.append("")

    L += ["## 2. HTTP under the production server", ""]
    if http is None:
        L += ["Not run (`--skip http`).", ""]
    else:
        L += [f"`cds-service serve` with its default settings ({http.workers} gunicorn gthread workers) on 127.0.0.1, CDS_AUTH_MODE=off, "
              f"a temporary SQLite audit database. Requests: {http.request_source}, cycled. The trivial endpoint "
              f"(bench/trivial_app.py, same gunicorn settings) answers the same POSTs with a {http.response_bytes:,}-byte body "
              "(the mean size of the service's responses). The load generator (one thread and one requests.Session per client) "
              "runs on the same 2 CPUs as the servers, so absolute figures include its own cost.", "",
              "| Target | Concurrency | Seconds | Requests | Errors | Throughput | p50 | p99 | Throughput vs trivial |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        tri = {x.concurrency: x for x in http.rows if x.target == "trivial"}
        for x in http.rows:
            rel = f"{x.throughput / tri[x.concurrency].throughput:.0%}" if x.target == "service" and x.concurrency in tri else ""
            L.append(f"| {x.target} | {x.concurrency} | {x.seconds:g} | {x.requests:,} | {x.errors} | {x.throughput:,.0f}/s | "
                     f"{x.p50_ms:.1f} ms | {x.p99_ms:.1f} ms | {rel} |")
        L += ["", f"Audit store: {http.audit_rows:,} invocation rows for {http.sent_to_service:,} calls sent (warm-up included); "
              f"the background writer had caught up {http.audit_wait_s:.2f} s after the last call."]
        if http.error_samples:
            L += ["", "Error samples: " + "; ".join(f"`{e}`" for e in http.error_samples)]
        L.append("")

    L += ["## 3. No prefetch", ""]
    if nopf is None:
        L += ["Not run (`--skip noprefetch`).", ""]
    elif nopf.error:
        L += [f"Not measured: {nopf.error}", ""]
    else:
        L += [f"FHIR server {nopf.server}; one patient loaded with {nopf.observations_loaded} Observations (plus medications and "
              f"conditions). The service's own prefetch queries, fetched through FhirGateway.fetch_many as the engine does; "
              f"medians of {nopf.runs} runs, each run alternating the parallel fetch with each query alone.", "",
              "| Query | Entries | Alone (median) |", "|---|---:|---:|"]
        L += [f"| {k} | {nopf.entries.get(k, 0)} | {v:.1f} ms |" for k, v in nopf.single_ms.items()]
        L += ["", f"- Parallel fetch of all {len(nopf.single_ms)} queries: **{nopf.parallel_ms:.1f} ms** (wall)",
              f"- Sum of the queries alone: {nopf.sum_ms:.1f} ms; slowest alone: {nopf.slowest_ms:.1f} ms "
              f"(parallel / slowest = {nopf.parallel_ms / nopf.slowest_ms:.2f}, parallel / sum = {nopf.parallel_ms / nopf.sum_ms:.2f})",
              f"- A whole no-prefetch hook call in-process (fetch + record + rules + cards): {nopf.hook_ms:.1f} ms",
              f"- The same answers replayed by a threaded loopback server, each after its query's latency alone: parallel "
              f"fetch **{nopf.replay_parallel_ms:.1f} ms** (parallel / slowest = {nopf.replay_parallel_ms / nopf.slowest_ms:.2f}). "
              "The test FHIR server (sekmet-fhir) answers one request at a time, so against it no client can beat the sum; "
              "the replay isolates what the gateway does with a server that answers concurrently (as HAPI does).", ""]

    L += ["## 4. Start-up and memory", ""]
    if http is None:
        L += ["Not run (`--skip http`).", ""]
    else:
        L += ["- Start-up of `cds-service serve` to the first 200 from `GET /cds-services` (fresh process each time): "
              + ", ".join(f"{s:.2f} s" for s in http.startup_s),
              "- Resident memory (VmRSS) per worker right after start-up: " + ", ".join(f"{m:.0f} MB" for m in http.worker_rss_idle_mb),
              "- Resident memory per worker after the load test: " + ", ".join(f"{m:.0f} MB" for m in http.worker_rss_mb), ""]
    if len(notes) > 1:
        L += ["## Notes", ""] + [f"- {n}" for n in notes[1:]] + [""]
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(L), encoding="utf-8")
    return path


def _cpus() -> Any:
    import os

    return os.cpu_count()


def chart_png(path: Path, scaling: list[ScalingRow], http: HttpResult | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    xs = [r.observations for r in scaling]
    ax.loglog(xs, [r.median_ms for r in scaling], "o-", label="handling (median)")
    ax.loglog(xs, [r.p99_ms for r in scaling], "s--", label="handling (p99)")
    ax.loglog(xs, [r.loads_median_ms for r in scaling], "^-", label="json.loads of the body")
    ax.loglog(xs, [4 * r.loads_median_ms for r in scaling], ":", color="grey", label="4 x json.loads (budget)")
    ax.axhline(25, color="red", lw=0.8, ls=":", label="25 ms")
    ax.set_xlabel("Observations in prefetch")
    ax.set_ylabel("ms")
    ax.set_title("1. Scaling")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.semilogx(xs, [r.us_per_observation for r in scaling], "o-")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Observations in prefetch")
    ax.set_ylabel("µs per Observation")
    ax.set_title("Cost per Observation (flat = linear)")
    ax = axes[2]
    if http is not None and http.rows:
        for target, marker in (("service", "o-"), ("trivial", "s--")):
            rows = [x for x in http.rows if x.target == target]
            ax.plot([x.concurrency for x in rows], [x.throughput for x in rows], marker, label=f"{target} throughput")
        ax2 = ax.twinx()
        rows = [x for x in http.rows if x.target == "service"]
        ax2.plot([x.concurrency for x in rows], [x.p99_ms for x in rows], "r^:", label="service p99")
        ax2.set_ylabel("p99 ms", color="red")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_ylabel("requests / s")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_title("2. HTTP (gunicorn)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
