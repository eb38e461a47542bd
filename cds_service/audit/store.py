"""The audit store: invocations, cards, feedback, JWT replay cache.

Nothing lost, nothing blocking: each call's compact audit record (``audit.compact``) is appended to this
process's spool file (``audit.spool``) before the response is sent, and a writer thread ships the spool to
the database in batches (one transaction per batch; shipping is idempotent by the record's uid). A
database outage only makes the writer wait and retry: records stay in the spool, ``/readyz`` shows the
lag. Spool files left by a process that is gone (SIGTERM cut short, ``kill -9``, a crash) are shipped by
the writer of any live process on the same database, at start-up and every ``ORPHAN_SCAN_SECONDS``.

Record types: a spool frame's ``meta["type"]`` names its shipper (``SHIPPERS``); ``invocation`` is the
one call record. Another type (e.g. a compact row for a refused call) adds a shipper and a ``record_*``
method that calls ``self._spool_record``.
"""
from __future__ import annotations

import atexit
import collections
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Delete, String, create_engine, delete, event, select, text
from sqlalchemy.engine import CursorResult
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .. import metrics
from ..errors import CDSError
from ..protocol.card import card_topic
from .compact import SnapshotEncoder, aggregate_gaps, cap_facts, compact_snapshot, encode_json, snapshot_json
from .invocation import Invocation, snapshot
from .schema import CardRow, FeedbackRow, InvocationRow, RecordSnapshotRow, SeenJti
from .spool import FSYNC_INTERVAL, Spool, claim_orphan, encode_frame, read_frames, spool_dir_for

log = logging.getLogger(__name__)
WRITE_BATCH = 200  # records per audit transaction
ORPHAN_SCAN_SECONDS = 10.0  # how often a live writer looks for spool files of dead processes
OUTAGE_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)  # seconds between shipping attempts while the database is down
_DATETIME_COLUMNS = ("received_at", "evaluated_at")


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


def default_spool_base(url: str, configured: str = "") -> tuple[Path, bool]:
    """(spool base directory, temporary?): the setting; else next to a SQLite file; else ``cds-audit-spool``
    in the working directory; a private temporary directory for an in-memory database."""
    if configured:
        return Path(configured), False
    if is_memory_sqlite(url):
        return Path(tempfile.mkdtemp(prefix="cds-audit-spool-")), True
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database:
            return Path(os.path.abspath(database) + ".spool"), False
    return Path("cds-audit-spool").resolve(), False


def is_outage(exc: BaseException) -> bool:
    """A database that cannot be reached or is locked (retry later), as opposed to a record it refuses."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        name = type(exc.orig).__name__ if exc.orig is not None else ""
        return name in {"OperationalError", "InterfaceError"} or "connection" in str(exc).lower()
    return isinstance(exc, (OSError, TimeoutError))


class AuditStore:
    def __init__(self, url: str, *, create: bool = True, background: bool = True,
                 retry_delays: tuple[float, ...] = (0.2, 1.0), spool_dir: str = "", spool_fsync: str = "interval",
                 segment_bytes: int = 16 * 1024 * 1024):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.written = 0
        self.failures = 0  # records the database refused (kept in the spool's rejected/ directory)
        self.dropped = 0  # records that could not even be spooled (disk full, ...)
        self.orphans_shipped = 0  # records shipped from spool files of dead processes
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.retry_delays = retry_delays
        self.encoder = SnapshotEncoder()
        self._background = background
        self._spool_fsync = spool_fsync
        self._segment_bytes = segment_bytes
        base, self._spool_temporary = (default_spool_base(url, spool_dir) if background else (Path(), False))
        self.spool_dir = spool_dir_for(base, normalise_url(url)) if background else None
        self._spool_base = base
        self.spool: Spool | None = None
        self._pending: collections.deque[float] = collections.deque()  # append times of records not yet shipped
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._atexit_registered = False
        self._closed = False
        self._readers: dict[Path, Any] = {}
        self._offsets: dict[Path, int] = {}
        self.shippers: dict[str, Callable[[Session, list[tuple[dict[str, Any], bytes]]], None]] = {
            "invocation": self._ship_invocations,
        }
        self._needs_migration = False
        if create:
            try:
                self.migrate()
            except Exception as exc:  # a database outage at start-up must not stop the service from answering
                if not (background and is_outage(exc)):
                    raise
                self._needs_migration = True
                self._note_error(_describe(exc))
                log.error("audit store unreachable at start-up (%s): calls are answered and spooled; the writer "
                          "migrates and ships when it is back", self.last_error)
        if background:
            self._ensure_writer()  # ships spool files left by dead processes right away

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
        """Writer counters for /readyz: lag (records spooled, not yet in the database, and the age of the
        oldest), what was written, refused and shipped from dead processes' spools."""
        try:
            pending: float | None = self._pending[0]
        except IndexError:
            pending = None
        spool_bytes = sum(max(0, seg.size - self._offsets.get(seg.path, 0))  # not yet shipped
                          for seg in self.spool.segments()) if self.spool is not None else 0
        return {
            "written": self.written,
            "failed": self.failures,
            "dropped": self.dropped,
            "queued": len(self._pending),
            "lagSeconds": round(time.monotonic() - pending, 3) if pending is not None else 0.0,
            "spoolBytes": spool_bytes,
            "orphansShipped": self.orphans_shipped,
            "lastError": self.last_error,
            "lastErrorAt": self.last_error_at.isoformat() if self.last_error_at else None,
        }

    # ------------------------------------------------------------------ invocations
    def record_invocation(self, inv: Invocation) -> None:
        """Spool the call's audit record (durable before the response goes out); never raises."""
        try:
            meta, blob = invocation_record(inv)
            self._spool_record(meta, blob)
        except Exception:  # never let the audit reach the client
            self.dropped += 1
            self._note_error("could not spool an audit record")
            log.exception("could not spool the audit record for hookInstance=%s", getattr(inv, "hook_instance", None))

    def _spool_record(self, meta: dict[str, Any], blob: bytes = b"") -> None:
        if not self._background:
            self._ship_now([(meta, blob)])
            return
        self._ensure_writer()
        frame = encode_frame(meta, blob)
        try:
            with self._cond:
                self.spool.append(frame)  # type: ignore[union-attr]
                self._pending.append(time.monotonic())
                full_batch = len(self._pending) >= WRITE_BATCH
        except OSError as exc:  # the spool cannot be written (unwritable directory, disk full): straight to the database
            self._note_error(f"audit spool: {_describe(exc)}")
            log.error("audit spool %s not writable (%s): writing this record to the database directly",
                      self.spool_dir, _describe(exc))
            self._ship_now([(meta, blob)])
            return
        if full_batch:  # otherwise the writer ships every FSYNC_INTERVAL: batches, not one transaction per call
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every spooled record is in the database (tests, shutdown). True when shipped."""
        if not self._background or self._pid != os.getpid():
            return True
        if self._thread is None or not self._thread.is_alive():
            return not self._pending
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("audit flush timed out after %.1fs with %d record(s) not yet shipped (they stay in the "
                              "spool and are shipped later)", timeout, len(self._pending))
                    return False
                self._cond.wait(min(left, 0.1))
                self._wake.set()
        return True

    def close(self) -> None:
        """Flush, stop the writer and release connections (idempotent). Unshipped records stay in the spool."""
        if self._closed:
            return
        self._closed = True
        shipped = self.flush()
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self._thread.join(5)
        if self.spool is not None and self._pid == os.getpid():
            for fh in self._readers.values():
                fh.close()
            self._readers.clear()
            self.spool.close(delete=shipped)
        if self._spool_temporary:
            shutil.rmtree(self._spool_base, ignore_errors=True)
        if self._atexit_registered:
            atexit.unregister(self._at_exit)
        self.engine.dispose()

    def _at_exit(self) -> None:
        if self._pid != os.getpid() or self._closed:
            return
        if self._pending:
            log.info("audit: shipping %d spooled record(s) at exit", len(self._pending))
        self.flush(timeout=5.0)  # what is left stays in the spool: the next process ships it
        self._stop.set()
        if self.spool is not None:
            self.spool.sync()
            self.spool.close(delete=not self._pending)

    def _ensure_writer(self) -> None:
        if self._pid != os.getpid():  # forked: fresh spool, thread and connections
            with self._lock:
                if self._pid != os.getpid():
                    self.engine.dispose(close=False)
                    self.spool = None
                    self._thread = None
                    self._pending = collections.deque()
                    self._readers, self._offsets = {}, {}
                    self._cond, self._wake, self._stop = threading.Condition(), threading.Event(), threading.Event()
                    self._pid = os.getpid()
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self.spool is None:
                self.spool = Spool(self.spool_dir, self._spool_fsync, self._segment_bytes)  # type: ignore[arg-type]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
                if not self._atexit_registered:
                    atexit.register(self._at_exit)
                    self._atexit_registered = True

    # ------------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        next_orphan_scan = 0.0
        outages = 0
        while not self._stop.is_set():
            try:
                if self._needs_migration:
                    self.migrate()
                    self._needs_migration = False
                if time.monotonic() >= next_orphan_scan:
                    next_orphan_scan = time.monotonic() + ORPHAN_SCAN_SECONDS
                    self._ship_orphans()
                self.spool.sync()  # type: ignore[union-attr]
                self._ship_own()
                outages = 0
            except Exception as exc:
                if is_outage(exc):
                    self._note_error(_describe(exc))
                    delay = OUTAGE_BACKOFF[min(outages, len(OUTAGE_BACKOFF) - 1)]
                    outages += 1
                    log.warning("audit store unreachable (%s); %d record(s) wait in the spool, retrying in %.1fs",
                                self.last_error, len(self._pending), delay)
                    self._stop.wait(delay)
                    continue
                self._note_error(_describe(exc))
                log.exception("audit writer error")
                self._stop.wait(1.0)
                continue
            self._wake.wait(FSYNC_INTERVAL)
            self._wake.clear()

    def _ship_own(self) -> None:
        for seg in self.spool.segments():  # type: ignore[union-attr]
            fh = self._readers.get(seg.path)
            if fh is None:
                # the reader stays open across batches in self._readers; closed when the segment is retired or on close()
                fh = self._readers[seg.path] = open(seg.path, "rb")  # noqa: SIM115
            offset = self._offsets.get(seg.path, 0)
            while offset < seg.size:
                batch = []
                end = offset
                for frame in read_frames(fh, offset):
                    batch.append((frame.meta, frame.blob))
                    end = frame.end
                    if len(batch) >= WRITE_BATCH:
                        break
                if not batch:
                    break
                self._ship_batch(batch)
                offset = self._offsets[seg.path] = end
                with self._cond:
                    for _ in batch:
                        if self._pending:
                            self._pending.popleft()
                    self._cond.notify_all()
                metrics.sync_audit(self)  # the queue gauge after the shipped records left it
            if offset >= seg.size and self.spool.retire(seg):  # type: ignore[union-attr]
                self._readers.pop(seg.path).close()
                self._offsets.pop(seg.path, None)

    def _ship_orphans(self) -> None:
        for path in self.spool.orphans():  # type: ignore[union-attr]
            fd = claim_orphan(path)
            if fd is None:
                continue
            try:
                with os.fdopen(fd, "rb", closefd=False) as fh:
                    batch: list[tuple[dict[str, Any], bytes]] = []
                    n = 0
                    for frame in read_frames(fh):
                        batch.append((frame.meta, frame.blob))
                        if len(batch) >= WRITE_BATCH:
                            self._ship_batch(batch)
                            n += len(batch)
                            batch = []
                    if batch:
                        self._ship_batch(batch)
                        n += len(batch)
                path.unlink()
                self.orphans_shipped += n
                log.info("audit: shipped %d record(s) from %s, left by a process that is gone", n, path.name)
            finally:
                os.close(fd)

    def _ship_batch(self, batch: list[tuple[dict[str, Any], bytes]]) -> None:
        """One transaction for the batch; if the database refuses it (not an outage), one per record, and a
        record refused on its own is set aside in ``rejected/`` and counted. Outages propagate (retry later)."""
        try:
            self._ship_now(batch, retry=False)
            return
        except Exception as exc:
            if is_outage(exc):
                raise
        for item in batch:
            try:
                self._ship_now([item], retry=False)
            except Exception as exc:
                if is_outage(exc):
                    raise
                self.failures += 1
                self._note_error(_describe(exc))
                self._reject(item, exc)

    def _reject(self, item: tuple[dict[str, Any], bytes], exc: Exception) -> None:
        log.error("audit record %s refused by the database (%s): kept in the spool's rejected/ directory",
                  item[0].get("uid"), _describe(exc))
        if self.spool_dir is None:
            return
        try:
            rejected = self.spool_dir / "rejected"
            rejected.mkdir(parents=True, exist_ok=True)
            with open(rejected / f"rejected-{os.getpid()}.frames", "ab") as fh:
                fh.write(encode_frame(item[0], item[1]))
        except OSError:
            log.exception("could not keep the rejected audit record")

    def _ship_now(self, batch: list[tuple[dict[str, Any], bytes]], retry: bool = True) -> None:
        """Write records to the database (idempotent). ``retry``: the in-line path (no spool), with its delays."""
        attempts = len(self.retry_delays) + 1 if retry else 1
        for attempt in range(attempts):
            try:
                by_type: dict[str, list[tuple[dict[str, Any], bytes]]] = {}
                for meta, blob in batch:
                    by_type.setdefault(meta.get("type", "invocation"), []).append((meta, blob))
                with self.sessions.begin() as s:
                    for kind, items in by_type.items():
                        self.shippers[kind](s, items)
                self.written += len(batch)
                metrics.audit_shipped([meta for meta, _ in batch])
                return
            except Exception as exc:
                if not retry:
                    raise
                self._note_error(_describe(exc))
                if attempt < attempts - 1:
                    time.sleep(self.retry_delays[attempt])
                    continue
                self.failures += len(batch)
                log.error("audit write failed for %d record(s) after %d attempt(s): %s", len(batch), attempts, self.last_error)

    def _ship_invocations(self, s: Session, items: list[tuple[dict[str, Any], bytes]]) -> None:
        """Invocation rows (cards and facts compressed), their card rows, and each snapshot once (by hash)."""
        uids = [m["uid"] for m, _ in items]
        existing = set(s.scalars(select(InvocationRow.record_uid).where(InvocationRow.record_uid.in_(uids))))
        snapshots: dict[str, dict[str, Any]] = {}
        rows: list[tuple[InvocationRow, list[dict[str, Any]]]] = []
        for meta, raw in items:
            if meta["uid"] in existing:
                continue  # already shipped (a spool read again after a crash): shipping is idempotent
            existing.add(meta["uid"])
            digest = None
            if raw:
                digest, content = self.encoder.encode(raw)
                if digest not in snapshots:
                    snapshots[digest] = {"hash": digest, "content": content, "raw_bytes": len(raw),
                                         "created_at": _parse_dt(meta.get("received_at")) or datetime.now(UTC)}
            row = InvocationRow(**row_values(meta, digest))
            s.add(row)
            rows.append((row, meta.get("cards") or []))
        if snapshots:
            have = set(s.scalars(select(RecordSnapshotRow.hash).where(RecordSnapshotRow.hash.in_(list(snapshots)))))
            new = [v for k, v in snapshots.items() if k not in have]
            if new:
                s.execute(_insert_ignore(s, RecordSnapshotRow), new)
        if not rows:
            return
        s.flush()
        cards = []
        for row, card_list in rows:
            for card in card_list:
                                cards.append({"uuid": str(card.get("uuid", ""))[:64], "invocation_id": row.id, "service_id": row.service_id,
                              "rule": card_topic(card)[:100], "indicator": str(card.get("indicator", ""))[:16],
                              "created_at": row.received_at})
        if cards:
            s.execute(_insert_ignore(s, CardRow), cards)
            self._link_early_feedback(s, cards)

    @staticmethod
    def _link_early_feedback(s: Session, cards: list[dict[str, Any]]) -> None:
        """Feedback that arrived before its call was shipped (kept as an unknown card) is linked now."""
        by_uuid = {c["uuid"]: c for c in cards}
        early = s.scalars(select(FeedbackRow).where(FeedbackRow.unknown_card.is_(True),
                                                    FeedbackRow.card_uuid.in_(list(by_uuid)))).all()
        for fb in early:
            card = by_uuid[fb.card_uuid]
            fb.invocation_id, fb.rule, fb.unknown_card = card["invocation_id"], card["rule"], False

    def _note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = datetime.now(UTC)

    # ------------------------------------------------------------------ reading
    def get(self, hook_instance: str) -> dict[str, Any] | None:
        """The newest stored call with this hookInstance as ``queries.invocation_dict``: its cards, the facts
        each card used, the gaps (first few + ``gapCounts``) and ``recordSnapshot``, the decompressed
        normalised record (None for calls that built none). Records still in the spool are not seen."""
        from .queries import find_invocations, invocation_dict

        with self.sessions() as s:
            found = find_invocations(s, hook_instance)
            return invocation_dict(found[-1]) if found else None

    # ------------------------------------------------------------------ feedback
    def record_feedback(self, service_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store feedback once per (card, outcome, timestamp); unknown cards are kept and flagged (and linked
        when their call is shipped later)."""
        if self._pending:
            self.flush(timeout=1.0)  # this worker's calls first, so that their cards are known
        try:
            return self._record_feedback(service_id, items)
        except SQLAlchemyError as exc:
            self._note_error(f"feedback: {type(exc).__name__}")
            log.error("audit store unavailable for feedback on %s: %s", service_id, type(exc).__name__)
            raise AuditStoreUnavailable("the audit store is unavailable; send the feedback again later") from None

    def _record_feedback(self, service_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = []
        now = datetime.now(UTC)
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
        cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
        with self.sessions.begin() as s:
            old = select(InvocationRow.id).where(InvocationRow.received_at < cutoff)
            cards = _deleted(s, delete(CardRow).where(CardRow.invocation_id.in_(old)))
            feedback = _deleted(s, delete(FeedbackRow).where(FeedbackRow.received_at < cutoff))
            invocations = _deleted(s, delete(InvocationRow).where(InvocationRow.received_at < cutoff))
            used = select(InvocationRow.snapshot_hash).where(InvocationRow.snapshot_hash.is_not(None))
            snapshots = _deleted(s, delete(RecordSnapshotRow).where(RecordSnapshotRow.created_at < cutoff,
                                                                    RecordSnapshotRow.hash.not_in(used)))
        return {"invocation": invocations, "card": cards, "feedback": feedback, "record_snapshot": snapshots,
                "seen_jti": self.purge_jti()}

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
                if row is not None and _aware(row.expires_at) < datetime.now(UTC):
                    row.expires_at = expires_at
                    return True
            return False

    def purge_jti(self) -> int:
        with self.sessions.begin() as s:
            return _deleted(s, delete(SeenJti).where(SeenJti.expires_at < datetime.now(UTC)))


class _Barrier:
    def __init__(self, done: threading.Event):
        self.done = done


def _deleted(s: Session, statement: Delete) -> int:
    """Run a DELETE; how many rows it removed (a DML statement's result is a CursorResult, typed as Result)."""
    return cast(CursorResult[Any], s.execute(statement)).rowcount or 0


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _cut(value: Any, n: int) -> str | None:
    return None if value is None else str(value)[:n]


def _describe(exc: BaseException) -> str:
    text_ = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text_}"


def _parse_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _insert_ignore(s: Session, model: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL): rows already there are kept as they are."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(model).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model).on_conflict_do_nothing()


_RECORD_FIELDS = ("service_id", "hook", "hook_instance", "patient_id", "user_id", "encounter_id", "fhir_server",
                  "received_at", "evaluated_at", "latency_ms", "status", "error_code", "error", "knowledge_version",
                  "rules_evaluated", "rules_fired", "rule_errors", "cards", "prefetch", "fetch_ms", "client")


def invocation_record(inv: Invocation) -> tuple[dict[str, Any], bytes]:
    """The compact audit record of a call (JSON-able meta) and its snapshot as canonical JSON (b"" when none).
    Hashing and compression are the writer's (off the response path)."""
    meta: dict[str, Any] = {"type": "invocation", "uid": str(uuid.uuid4())}
    for name in _RECORD_FIELDS:
        value = getattr(inv, name)
        meta[name] = value.isoformat() if isinstance(value, datetime) else value
    gaps, counts = aggregate_gaps(inv.gaps or [])
    meta["gaps"], meta["gap_counts"] = gaps, counts or None
    meta["facts"] = cap_facts(inv.facts or {})
    snap = inv.record_snapshot
    if snap is None and inv.record is not None:
        snap = snapshot(inv.record)
    return meta, (snapshot_json(compact_snapshot(snap)) if snap is not None else b"")


def row_values(meta: dict[str, Any], snapshot_hash: str | None) -> dict[str, Any]:
    """A spooled record as InvocationRow values; strings cut to their column length (ids come from clients)."""
    out: dict[str, Any] = {"record_uid": meta["uid"], "snapshot_hash": snapshot_hash,
                           "gap_counts": meta.get("gap_counts"), "gaps": meta.get("gaps") or [],
                           "inline_cards": [], "inline_facts": {},
                           "detail": encode_json({"cards": meta.get("cards") or [], "facts": meta.get("facts") or {}})}
    columns = InvocationRow.__table__.columns
    for name in _RECORD_FIELDS:
        if name == "cards":
            continue
        value = meta.get(name)
        if name in _DATETIME_COLUMNS:
            value = _parse_dt(value)
        col = columns[name]
        if isinstance(col.type, String) and col.type.length and isinstance(value, str):
            value = value[: col.type.length]
        out[name] = value
    for name in ("rules_evaluated", "rules_fired"):
        out[name] = out[name] or []
    for name in ("rule_errors", "prefetch", "fetch_ms"):
        out[name] = out[name] or {}
    return out
