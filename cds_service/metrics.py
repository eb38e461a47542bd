"""Prometheus metrics (prometheus-client). Under ``cds-service serve`` every gunicorn worker writes its
values to ``PROMETHEUS_MULTIPROC_DIR`` (set by serve before anything imports prometheus_client) and a
scrape adds them up (multiprocess mode); in-process (tests, ``invoke``) the default registry is used.

Served at ``GET /metrics`` behind the service's client authentication, or, with ``CDS_METRICS_PORT``,
on a port of its own (no authentication: keep it on the cluster network).

Label values are bounded: the service label is a known service id or ``unknown``; prefetch keys,
rules and indicators come from the definitions and the rules, never from the request.
"""
from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from .protocol.card import card_topic

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNKNOWN = "unknown"

CALLS = Counter("cds_hook_calls_total", "Hook calls by service and HTTP status.", ["service", "status"])
LATENCY = Histogram("cds_hook_call_duration_seconds", "Hook call latency (request read to response), by service.",
                    ["service"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0))
CARDS = Counter("cds_cards_total", "Cards returned, by rule (source.topic.code) and indicator.", ["rule", "indicator"])
PREFETCH = Counter("cds_prefetch_keys_total",
                   "Prefetch keys by outcome: prefetched (sent by the EHR), fetched (from fhirServer), "
                   "unavailable (neither).", ["service", "key", "outcome"])
AUTH_REFUSALS = Counter("cds_auth_refusals_total", "Client JWTs refused, by reason class.", ["reason"])
AUDIT_WRITTEN = Counter("cds_audit_written_total", "Invocations written to the audit store.")
AUDIT_FAILED = Counter("cds_audit_write_failures_total", "Invocations lost to audit store errors (after retries).")
AUDIT_DROPPED = Counter("cds_audit_dropped_total", "Invocations not recorded because the audit queue was full.")
AUDIT_QUEUE = Gauge("cds_audit_queue_depth", "Invocations waiting for the audit writer.", multiprocess_mode="livesum")
AUDIT_LAG = Histogram("cds_audit_write_lag_seconds", "From the response to the audit row being committed.",
                      buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))

_synced: dict[str, float] = {}  # this process's counters as last read from the store's own stats
_sync_lock = threading.Lock()

# Refusal reasons (auth.py's log text, never sent to clients) -> a small fixed set of classes.
_REASON_CLASSES = (
    ("replay", re.compile(r"jti replayed")),
    ("expired", re.compile(r"ExpiredSignature|ImmatureSignature|exp is .* away|InvalidIssuedAt")),
    ("audience", re.compile(r"\baud\b")),
    ("untrusted-issuer", re.compile(r"is not trusted|sub is not on|tenant claim")),
    ("unknown-key", re.compile(r"unknown kid|keys unavailable|jku .* allowlist|key .* is for")),
    ("algorithm", re.compile(r"algorithm")),
    ("signature", re.compile(r"InvalidSignature|DecodeError|InvalidKey")),
    ("malformed", re.compile(r"not a JWT|not a Bearer|no kid|typ |jti must|Missing|InvalidToken")),
)


def refusal_class(reason: str, missing_token: bool = False) -> str:
    if missing_token:
        return "missing-token"
    for name, pattern in _REASON_CLASSES:
        if pattern.search(reason or ""):
            return name
    return "other"


def auth_refused(reason: str, missing_token: bool = False) -> None:
    AUTH_REFUSALS.labels(refusal_class(reason, missing_token)).inc()


def observe_call(inv: Any, known_service: bool) -> None:
    """One hook call, after the response is decided (api/hooks.py)."""
    service = inv.service_id if known_service else UNKNOWN
    CALLS.labels(service, str(inv.status)).inc()
    LATENCY.labels(service).observe(max(0.0, inv.latency_ms / 1000.0))
    for card in inv.cards or ():
        rule = card_topic(card) or UNKNOWN
        CARDS.labels(str(rule)[:100], str(card.get("indicator") or UNKNOWN)[:16]).inc()
    if known_service:
        for key, outcome in (inv.prefetch or {}).items():
            PREFETCH.labels(service, key, str(outcome).split(" ", 1)[0]).inc()


def audit_shipped(metas: Any) -> None:
    """Called by the spool shipper after a commit, with the records' metadata (received_at ISO text, latency_ms):
    the count and the lag from response to commit. The queue gauge is synced by the writer once the shipped
    records have left its queue (and on every hook call)."""
    from datetime import datetime

    now = time.time()
    n = 0
    for meta in metas:
        n += 1
        try:
            answered = datetime.fromisoformat(str(meta.get("received_at"))).timestamp() + float(meta.get("latency_ms") or 0.0) / 1000.0
        except (TypeError, ValueError):
            continue
        AUDIT_LAG.observe(max(0.0, now - answered))
    AUDIT_WRITTEN.inc(n)


def sync_audit(store: Any) -> None:
    """Queue depth, failures and drops from the store's own counters (``stats()``, also shown in /readyz)."""
    try:
        stats = store.stats()
    except Exception:  # metrics never break a call
        return
    AUDIT_QUEUE.set(stats.get("queued") or 0)
    with _sync_lock:
        key = f"{os.getpid()}:{id(store)}"
        for name, counter in (("failed", AUDIT_FAILED), ("dropped", AUDIT_DROPPED)):
            value = float(stats.get(name) or 0)
            seen = _synced.get(f"{key}:{name}", 0.0)
            if value > seen:
                counter.inc(value - seen)
                _synced[f"{key}:{name}"] = value


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def registry() -> CollectorRegistry:
    """What a scrape reads: all workers' files in multiprocess mode, else this process."""
    if multiprocess_dir():
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
        return reg
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """gunicorn ``child_exit``: a dead worker's live gauges (queue depth) stop counting."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)
