"""The audit store: invocations, cards, feedback, JWT replay cache.

Writes never block or fail a hook response: invocations go through a queue drained by one
background thread per process; a store outage is logged and counted, and the queue is flushed
on a normal shutdown.
"""
from __future__ import annotations

import atexit
import logging
import queue
import threading
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..engine import Invocation
from .schema import Base, CardRow, FeedbackRow, InvocationRow, SeenJti

log = logging.getLogger(__name__)


def make_engine(url: str) -> SAEngine:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
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
    def __init__(self, url: str, *, create: bool = True, background: bool = True):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.failures = 0
        self.written = 0
        self._queue: queue.Queue[Invocation | None] = queue.Queue(maxsize=10000)
        self._thread: threading.Thread | None = None
        self._background = background
        self._lock = threading.Lock()
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

    # ------------------------------------------------------------------ invocations
    def record_invocation(self, inv: Invocation) -> None:
        """Queue an invocation for writing; never raises, never blocks the response."""
        if not self._background:
            self._write(inv)
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait(inv)
        except queue.Full:
            self.failures += 1
            log.error("audit queue full: invocation %s not recorded", inv.hook_instance)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued invocation is written (tests, shutdown)."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(_Barrier(done))  # type: ignore[arg-type]
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self.engine.dispose()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="audit-writer", daemon=True)
                self._thread.start()
                atexit.register(self.flush)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, _Barrier):
                item.done.set()
                continue
            if item is None:
                return
            self._write(item)

    def _write(self, inv: Invocation) -> None:
        try:
            with self.sessions.begin() as s:
                row = InvocationRow(**_invocation_columns(inv))
                s.add(row)
                s.flush()
                for card in inv.cards:
                    topic = ((card.get("source") or {}).get("topic") or {}).get("code", "")
                    s.merge(CardRow(uuid=card["uuid"], invocation_id=row.id, service_id=inv.service_id, rule=topic,
                                    indicator=card.get("indicator", ""), created_at=inv.received_at))
            self.written += 1
        except Exception:  # a store outage must never reach the client
            self.failures += 1
            log.exception("audit write failed for hookInstance %s", inv.hook_instance)

    # ------------------------------------------------------------------ feedback
    def record_feedback(self, service_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store feedback once per (card, outcome, timestamp); unknown cards are kept and flagged."""
        results = []
        now = datetime.now(timezone.utc)
        with self.sessions() as s:
            for item in items:
                card = s.get(CardRow, item["card"])
                override = item.get("overrideReason") or {}
                reason = override.get("reason") or {}
                row = FeedbackRow(
                    service_id=service_id,
                    card_uuid=item["card"],
                    invocation_id=card.invocation_id if card else None,
                    rule=card.rule if card else None,
                    outcome=item["outcome"],
                    outcome_timestamp=item["outcomeTimestamp"],
                    accepted_suggestions=[a.get("id") for a in item.get("acceptedSuggestions") or []],
                    override_code=reason.get("code") if isinstance(reason, dict) else None,
                    override_system=reason.get("system") if isinstance(reason, dict) else None,
                    override_display=reason.get("display") if isinstance(reason, dict) else None,
                    override_comment=override.get("userComment"),
                    unknown_card=card is None,
                    received_at=now,
                )
                try:
                    with s.begin_nested():
                        s.add(row)
                    results.append({"card": item["card"], "stored": True, "unknownCard": card is None})
                except IntegrityError:
                    results.append({"card": item["card"], "stored": False, "duplicate": True})
            s.commit()
        return results

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


def _invocation_columns(inv: Invocation) -> dict[str, Any]:
    d = asdict(inv)
    return {k: d[k] for k in InvocationRow.__table__.columns.keys() if k in d}
