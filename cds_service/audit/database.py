"""The audit database: its URL (the psycopg 3 driver), the SQLAlchemy engine, and which errors are an outage."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool


def is_memory_sqlite(url: str) -> bool:
    return url.startswith("sqlite") and (url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:") or ":memory:" in url)


def masked_url(url: str) -> str:
    """The URL as it may be shown (logs, the ready line, the audit tool): its password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def normalise_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` mean the psycopg 3 driver (the one installed), not psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


# libpq settings for every PostgreSQL connection of the audit store, unless the URL sets them: a database that
# vanishes without closing its connections (a network partition, a host that died) is noticed within about
# half a minute instead of hanging the writer thread on a socket that never answers.
POSTGRES_CONNECT_DEFAULTS: dict[str, int] = {
    "connect_timeout": 10,  # s to establish a connection
    "keepalives": 1,
    "keepalives_idle": 10,  # s idle before the first TCP keepalive probe
    "keepalives_interval": 5,  # s between probes
    "keepalives_count": 3,  # unanswered probes before the connection is dropped
    "tcp_user_timeout": 30_000,  # ms that sent data may stay unacknowledged before the connection is dropped
}


def make_engine(url: str) -> SAEngine:
    url = normalise_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        from sqlalchemy.engine import make_url

        given = make_url(url).query
        kwargs["connect_args"] = {k: v for k, v in POSTGRES_CONNECT_DEFAULTS.items() if k not in given}
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


def is_outage(exc: BaseException) -> bool:
    """A database that cannot be reached or is locked (retry later), as opposed to a record it refuses."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        name = type(exc.orig).__name__ if exc.orig is not None else ""
        return name in {"OperationalError", "InterfaceError"} or "connection" in str(exc).lower()
    return isinstance(exc, (OSError, TimeoutError))
