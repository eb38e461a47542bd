"""The audit writer: nothing lost, nothing blocking.

Each call's compact audit record (``audit.compact``) is appended to this process's spool file
(``audit.spool``) before the response is sent, and a writer thread ships the spool to the database in
batches (one transaction per batch; shipping is idempotent by the record's uid). A database outage only
makes the writer wait and retry: records stay in the spool, ``/readyz`` shows the lag. Spool files left by
a process that is gone (SIGTERM cut short, ``kill -9``, a crash) are shipped by the writer of any live
process on the same database, at start-up and every ``ORPHAN_SCAN_SECONDS``.
"""
from __future__ import annotations

import atexit
import collections
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session, sessionmaker

from .. import metrics
from .database import is_outage, normalise_url
from .spool import FSYNC_INTERVAL, Spool, claim_orphan, default_spool_base, encode_frame, read_frames, spool_dir_for

log = logging.getLogger(__name__)
WRITE_BATCH = 200  # records per audit transaction
ORPHAN_SCAN_SECONDS = 10.0  # how often a live writer looks for spool files of dead processes
OUTAGE_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)  # seconds between shipping attempts while the database is down


class SpoolWriter:
    """The spool and the writer thread that ships it: the base of AuditStore, which provides the database
    (``engine``, ``sessions``, ``migrate``) and the ``shippers`` of each record type."""

    engine: SAEngine
    sessions: sessionmaker[Session]
    shippers: dict[str, Callable[[Session, list[tuple[dict[str, Any], bytes]]], None]]

    def __init__(self, url: str, *, background: bool, retry_delays: tuple[float, ...], spool_dir: str,
                 spool_fsync: str, segment_bytes: int):
        self.written = 0
        self.failures = 0  # records the database refused (kept in the spool's rejected/ directory)
        self.dropped = 0  # records that could not even be spooled (disk full, ...)
        self.orphans_shipped = 0  # records shipped from spool files of dead processes
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.retry_delays = retry_delays
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
        self._needs_migration = False

    def migrate(self) -> None:
        """The database schema upgrade (AuditStore's): the writer runs it when the database was down at start-up."""
        raise NotImplementedError

    # ------------------------------------------------------------------ health
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

    # ------------------------------------------------------------------ the spool
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
            self._note_error(f"audit spool: {describe_error(exc)}")
            log.error("audit spool %s not writable (%s): writing this record to the database directly",
                      self.spool_dir, describe_error(exc))
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
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(5)  # a spool of a dead process being shipped is finished (and deleted), not cut short
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
                    self._note_error(describe_error(exc))
                    delay = OUTAGE_BACKOFF[min(outages, len(OUTAGE_BACKOFF) - 1)]
                    outages += 1
                    log.warning("audit store unreachable (%s); %d record(s) wait in the spool, retrying in %.1fs",
                                self.last_error, len(self._pending), delay)
                    self._stop.wait(delay)
                    continue
                self._note_error(describe_error(exc))
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
                self._note_error(describe_error(exc))
                self._reject(item, exc)

    def _reject(self, item: tuple[dict[str, Any], bytes], exc: Exception) -> None:
        log.error("audit record %s refused by the database (%s): kept in the spool's rejected/ directory",
                  item[0].get("uid"), describe_error(exc))
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
                self._note_error(describe_error(exc))
                if attempt < attempts - 1:
                    time.sleep(self.retry_delays[attempt])
                    continue
                self.failures += len(batch)
                log.error("audit write failed for %d record(s) after %d attempt(s): %s", len(batch), attempts, self.last_error)

    def _note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = datetime.now(UTC)


def describe_error(exc: BaseException) -> str:
    """An error in one line for logs and /readyz: its type and the first line of its message."""
    text_ = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text_}"
