"""The audit store: invocations, cards, feedback, JWT replay cache.

Writes never block or fail a hook response: invocations go through a bounded queue drained by one
background thread per process. A store outage is retried briefly, then logged and counted
(``stats()``, shown in /readyz); the queue is flushed on a normal shutdown (``atexit``, which also
runs when a gunicorn worker exits normally, and ``close()``).
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import String, create_engine, delete, event, select, text
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .. import metrics
from ..engine import Invocation, snapshot
from ..errors import CDSError
from .schema import CardRow, FeedbackRow, InvocationRow, SeenJti

log = logging.getLogger(__name__)
WRITE_BATCH = 50  # invocations per audit transaction when calls arrive faster than one commit each


class AuditStoreUnavailable(CDSError):
    """503: the audit store could not take a write the client waits for (feedback)."""

    status = 503
    code = "audit-store-unavailable"
    fhir_code = "transient"


def is_memory_sqlite(url: str) -> bool:
    return url.startswith("sqlite") and (url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:") or ":memory:" in url)


def normalise_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` mean the psycopg 3 driver (the one installed), not psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str) -> SAEngine:
    url = normalise_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        if is_memory_sqlite(url):  # one shared connection, or the writer thread would see another empty database
            kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:  # WAL: concurrent readers + one writer across workers
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    return engine


class AuditStore:
    def __init__(self, url: str, *, create: bool = True, background: bool = True,
                 queue_size: int = 10000, retry_delays: tuple[float, ...] = (0.2, 1.0)):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.written = 0
        self.failures = 0  # invocations lost to a store error (after retries)
        self.dropped = 0  # invocations lost because the queue was full
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.retry_delays = retry_delays
        self._queue_size = queue_size
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._background = background
        self._lock = threading.Lock()
        self._atexit_registered = False
        self._closed = False
        if create:
            self.migrate()

    # ------------------------------------------------------------------ schema
    def migrate(self) -> None:
        from .migrate import upgrade

        upgrade(self.engine)

    # ------------------------------------------------------------------ health
    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def stats(self) -> dict[str, Any]:
        """Writer counters for /readyz: a store outage shows here (never in the hook response)."""
        return {
            "written": self.written,
            "failed": self.failures,
            "dropped": self.dropped,
            "queued": self._queue.qsize(),
            "lastError": self.last_error,
            "lastErrorAt": self.last_error_at.isoformat() if self.last_error_at else None,
        }

    # ------------------------------------------------------------------ invocations
    def record_invocation(self, inv: Invocation) -> None:
        """Queue an invocation for writing; never raises, never blocks the response."""
        try:
            if not self._background:
                self._write(inv)
                return
            self._ensure_thread()
            self._queue.put_nowait(inv)
        except queue.Full:
            self.dropped += 1
            self._note_error("audit queue full")
            log.error("audit queue full (%d): invocation hookInstance=%s not recorded", self._queue_size, inv.hook_instance)
        except Exception:  # never let the audit reach the client
            self.failures += 1
            log.exception("could not queue the audit record for hookInstance=%s", inv.hook_instance)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued invocation is written (tests, shutdown). True when drained."""
        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            return self._queue.empty()
        done = threading.Event()
        try:
            self._queue.put(_Barrier(done), timeout=timeout)
        except queue.Full:
            return False
        drained = done.wait(timeout)
        if not drained:
            log.error("audit flush timed out after %.1fs with %d record(s) queued", timeout, self._queue.qsize())
        return drained

    def close(self) -> None:
        """Flush, stop the writer and release connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self._queue.put(None)
            self._thread.join(5)
        if self._atexit_registered:
            atexit.unregister(self._at_exit)
        self.engine.dispose()

    def _at_exit(self) -> None:
        if self._pid == os.getpid() and not self._queue.empty():
            log.info("audit: flushing %d queued record(s) at exit", self._queue.qsize())
        self.flush(timeout=15.0)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked (e.g. gunicorn --preload): fresh queue, thread and connections
            with self._lock:
                if self._pid != os.getpid():
                    self.engine.dispose(close=False)
                    self._queue = queue.Queue(maxsize=self._queue_size)
                    self._thread = None
                    self._pid = os.getpid()
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="audit-writer", daemon=True)
                self._thread.start()
                if not self._atexit_registered:
                    atexit.register(self._at_exit)
                    self._atexit_registered = True

    def _drain(self) -> None:
        """Write what is queued, up to WRITE_BATCH invocations per transaction (one commit, not one per call)."""
        while True:
            batch: list[Invocation] = []
            item = self._queue.get()
            while True:
                if isinstance(item, _Barrier):  # everything queued before it is written first
                    self._write_batch(batch)
                    batch = []
                    item.done.set()
                elif item is None:
                    self._write_batch(batch)
                    return
                else:
                    batch.append(item)
                if len(batch) >= WRITE_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write_batch(batch)

    def _write_batch(self, batch: list[Invocation]) -> None:
        if len(batch) <= 1:
            for inv in batch:
                self._write(inv)
            return
        try:
            with self.sessions.begin() as s:
                for inv in batch:
                    self._add(s, inv)
            self.written += len(batch)
            metrics.audit_written(batch, self)
        except Exception:  # one bad record or an outage: fall back to one transaction each, with retries
            for inv in batch:
                self._write(inv)

    def _write(self, inv: Invocation) -> None:
        for attempt in range(len(self.retry_delays) + 1):
            try:
                self._insert(inv)
                self.written += 1
                metrics.audit_written((inv,), self)
                return
            except Exception as exc:  # a store outage must never reach the client
                self._note_error(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
                if attempt < len(self.retry_delays):
                    time.sleep(self.retry_delays[attempt])
                    continue
                self.failures += 1
                log.error("audit write failed for hookInstance=%s after %d attempt(s): %s",
                          getattr(inv, "hook_instance", None), attempt + 1, self.last_error)

    def _insert(self, inv: Invocation) -> None:
        with self.sessions.begin() as s:
            self._add(s, inv)

    @staticmethod
    def _add(s: Session, inv: Invocation) -> None:
        row = InvocationRow(**invocation_columns(inv))
        s.add(row)
        s.flush()
        for card in inv.cards:
            topic = ((card.get("source") or {}).get("topic") or {}).get("code", "")
            s.merge(CardRow(uuid=str(card.get("uuid", ""))[:64], invocation_id=row.id, service_id=row.service_id,
                            rule=str(topic)[:100], indicator=str(card.get("indicator", ""))[:16],
                            created_at=inv.received_at))

    def _note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = datetime.now(timezone.utc)

    # ------------------------------------------------------------------ feedback
    def record_feedback(self, service_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store feedback once per (card, outcome, timestamp); unknown cards are kept and flagged."""
        try:
            return self._record_feedback(service_id, items)
        except SQLAlchemyError as exc:
            self._note_error(f"feedback: {type(exc).__name__}")
            log.error("audit store unavailable for feedback on %s: %s", service_id, type(exc).__name__)
            raise AuditStoreUnavailable("the audit store is unavailable; send the feedback again later") from None

    def _record_feedback(self, service_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = []
        now = datetime.now(timezone.utc)
        with self.sessions() as s:
            for item in items:
                card_id = str(item["card"])[:200]
                card = s.get(CardRow, card_id) if len(card_id) <= 64 else None
                override = item.get("overrideReason") or {}
                reason = override.get("reason") or {}
                reason = reason if isinstance(reason, dict) else {}
                row = FeedbackRow(
                    service_id=service_id[:200],
                    card_uuid=card_id,
                    invocation_id=card.invocation_id if card else None,
                    rule=card.rule if card else None,
                    outcome=item["outcome"],
                    outcome_timestamp=str(item["outcomeTimestamp"])[:64],
                    accepted_suggestions=[a.get("id") for a in item.get("acceptedSuggestions") or []],
                    override_code=_cut(reason.get("code"), 200),
                    override_system=_cut(reason.get("system"), 500),
                    override_display=_cut(reason.get("display"), 500),
                    override_comment=override.get("userComment"),
                    unknown_card=card is None,
                    received_at=now,
                )
                if card is None:
                    log.warning("feedback for unknown card %s on %s: kept and flagged", card_id, service_id)
                try:
                    with s.begin_nested():
                        s.add(row)
                    results.append({"card": item["card"], "stored": True, "unknownCard": card is None})
                except IntegrityError:
                    results.append({"card": item["card"], "stored": False, "duplicate": True})
            s.commit()
        return results

    # ------------------------------------------------------------------ retention
    def purge(self, older_than_days: int, now: datetime | None = None) -> dict[str, int]:
        """Delete invocations (with their cards) and feedback received more than ``older_than_days`` ago,
        and expired JWT ids. Returns how many rows went from each table."""
        if older_than_days < 0:
            raise ValueError("older_than_days must be >= 0")
        cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=older_than_days)
        with self.sessions.begin() as s:
            old = select(InvocationRow.id).where(InvocationRow.received_at < cutoff)
            cards = s.execute(delete(CardRow).where(CardRow.invocation_id.in_(old))).rowcount or 0
            feedback = s.execute(delete(FeedbackRow).where(FeedbackRow.received_at < cutoff)).rowcount or 0
            invocations = s.execute(delete(InvocationRow).where(InvocationRow.received_at < cutoff)).rowcount or 0
        return {"invocation": invocations, "card": cards, "feedback": feedback, "seen_jti": self.purge_jti()}

    # ------------------------------------------------------------------ JWT replay cache
    def remember_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """True if (issuer, jti) was not seen before (and is now remembered); False on replay."""
        try:
            with self.sessions.begin() as s:
                s.add(SeenJti(issuer=issuer, jti=jti, expires_at=expires_at))
            return True
        except IntegrityError:
            with self.sessions.begin() as s:  # an expired entry may be reused
                row = s.get(SeenJti, (issuer, jti))
                if row is not None and _aware(row.expires_at) < datetime.now(timezone.utc):
                    row.expires_at = expires_at
                    return True
            return False

    def purge_jti(self) -> int:
        with self.sessions.begin() as s:
            result = s.execute(SeenJti.__table__.delete().where(SeenJti.expires_at < datetime.now(timezone.utc)))
            return result.rowcount or 0


class _Barrier:
    def __init__(self, done: threading.Event):
        self.done = done


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _cut(value: Any, n: int) -> str | None:
    return None if value is None else str(value)[:n]


def invocation_columns(inv: Invocation) -> dict[str, Any]:
    """The invocation as column values; strings cut to their column length (ids come from clients)."""
    d = {f.name: getattr(inv, f.name) for f in fields(inv)}  # shallow: the invocation is not touched again
    if d.get("record_snapshot") is None and inv.record is not None:
        d["record_snapshot"] = snapshot(inv.record)
    out: dict[str, Any] = {}
    for name, col in InvocationRow.__table__.columns.items():
        if name not in d:
            continue
        value = d[name]
        if isinstance(col.type, String) and col.type.length and isinstance(value, str):
            value = value[: col.type.length]
        out[name] = value
    return out
