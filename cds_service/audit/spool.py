"""The audit spool: an append-only file per worker process, written before the response is sent.

Each record is one frame: ``MAGIC | length (u32) | crc32 (u32) | payload`` where payload is
``meta length (u32) | meta (JSON) | snapshot blob``. A file is held with an exclusive ``flock`` by the
process that writes it, so a file whose lock can be taken belongs to a process that is gone (SIGTERM cut
short, ``kill -9``, a crash): the writer of any live process ships it and deletes it. A frame cut short
by a crash mid-write is the end of that file (its call was never answered).

fsync policy (``CDS_AUDIT_SPOOL_FSYNC``): ``always`` (each record, before the response: survives power
loss), ``interval`` (the writer fsyncs what was appended every ``FSYNC_INTERVAL`` s: a dead process loses
nothing, the OS holds it; a power cut may lose the last interval) or ``off`` (the OS decides).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import socket
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .database import is_memory_sqlite

log = logging.getLogger(__name__)
MAGIC = b"CDA1"
HEADER = struct.Struct("<4sII")
META_LEN = struct.Struct("<I")
SUFFIX = ".spool"
FSYNC_POLICIES = ("always", "interval", "off")
FSYNC_INTERVAL = 0.2


def spool_dir_for(base: str | os.PathLike[str], database_url: str) -> Path:
    """One sub-directory per database: a spool is only ever shipped to the database it was written for."""
    return Path(base) / hashlib.sha256(database_url.encode()).hexdigest()[:16]


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


def encode_frame(meta: dict[str, Any], blob: bytes = b"") -> bytes:
    m = orjson.dumps(meta)
    payload = META_LEN.pack(len(m)) + m + blob
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass
class Frame:
    meta: dict[str, Any]
    blob: bytes
    end: int  # offset just past this frame


def read_frames(fh: Any, offset: int = 0) -> Iterator[Frame]:
    """Complete frames from ``offset``; stops at the end or at a torn/corrupt tail."""
    fh.seek(offset)
    pos = offset
    while True:
        head = fh.read(HEADER.size)
        if len(head) < HEADER.size:
            return
        magic, length, crc = HEADER.unpack(head)
        if magic != MAGIC:
            log.error("audit spool %s: bad frame at offset %d; the rest of the file is not readable", getattr(fh, "name", "?"), pos)
            return
        payload = fh.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return  # torn write: the process died mid-frame, before answering that call
        (mlen,) = META_LEN.unpack_from(payload)
        meta = orjson.loads(payload[META_LEN.size:META_LEN.size + mlen])
        pos += HEADER.size + length
        yield Frame(meta, payload[META_LEN.size + mlen:], pos)


class SpoolFile:
    """One segment, locked by this process for as long as it is open."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.closed_for_append = False

    @classmethod
    def create(cls, directory: Path) -> SpoolFile:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}{SUFFIX}"
        path = directory / name
        hidden = directory / f".{name}.new"  # locked before it gets a name other processes look for
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(hidden, path)
        return cls(path, fd)

    def close(self) -> None:
        with suppress(OSError):
            os.close(self.fd)  # releases the lock


def claim_orphan(path: Path) -> int | None:
    """An fd holding the lock of a spool file whose writer is gone, or None (alive, or already taken)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    if not path.exists():  # shipped and deleted by another process between our open and our lock
        os.close(fd)
        return None
    return fd


class Spool:
    """This process's segments: append (any thread), read back and retire (the writer thread)."""

    def __init__(self, directory: Path, fsync: str = "interval", segment_bytes: int = 16 * 1024 * 1024):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"audit spool fsync policy must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segments: list[SpoolFile] = []  # oldest first; the last one takes appends
        self._dirty = False
        self.appended = 0
        self.appended_bytes = 0

    def append(self, frame: bytes) -> None:
        with self._lock:
            seg = self._segments[-1] if self._segments else None
            if seg is None or seg.size >= self.segment_bytes:
                if seg is not None:
                    seg.closed_for_append = True
                seg = SpoolFile.create(self.directory)
                self._segments.append(seg)
            view = memoryview(frame)
            while view:
                n = os.write(seg.fd, view)
                view = view[n:]
            seg.size += len(frame)
            if self.fsync == "always":
                os.fsync(seg.fd)
            else:
                self._dirty = True
            self.appended += 1
            self.appended_bytes += len(frame)

    def sync(self) -> None:
        """fsync what was appended since the last call (the writer's ``interval`` policy)."""
        if self.fsync != "interval" or not self._dirty:
            return
        with self._lock:
            self._dirty = False
            fds = [s.fd for s in self._segments]
        for fd in fds:
            with suppress(OSError):
                os.fsync(fd)

    def segments(self) -> list[SpoolFile]:
        with self._lock:
            return list(self._segments)

    def retire(self, seg: SpoolFile) -> bool:
        """Delete a segment the writer has shipped to its end, unless appends may still come to it."""
        with self._lock:
            if not seg.closed_for_append and self._segments and self._segments[-1] is seg:
                if seg.size < self.segment_bytes:
                    return False
                seg.closed_for_append = True  # full: the next append opens a new segment
            self._segments.remove(seg)
        seg.path.unlink(missing_ok=True)
        seg.close()
        return True

    def close(self, *, delete: bool) -> None:
        with self._lock:
            segs, self._segments = self._segments, []
        for seg in segs:
            if delete:
                seg.path.unlink(missing_ok=True)
            seg.close()

    def orphans(self) -> list[Path]:
        """Spool files in this directory that no open segment of this process is."""
        mine = {s.path.name for s in self.segments()}
        try:
            return sorted(p for p in self.directory.glob(f"*{SUFFIX}") if p.name not in mine)
        except FileNotFoundError:
            return []
