"""Schema upgrades for the audit store: Alembic, run programmatically (no alembic.ini at run time).

Safe when several workers start at once: PostgreSQL serialises them with an advisory lock,
SQLite with an exclusive lock file next to the database file. A database made by the earlier
``create_all`` (tables but no ``alembic_version``) is stamped at the baseline revision first.
"""
from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # start-up noise in every worker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"
_PG_LOCK_KEY = 0x6364_735F_6175  # "cds_au": one advisory lock id for audit migrations


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the audit schema to ``revision`` (default: the newest)."""
    with _migration_lock(engine), engine.connect() as conn:
        if _needs_baseline_stamp(conn):
            log.info("audit store predates migrations: stamping baseline %s", BASELINE)
            command.stamp(alembic_config(conn), BASELINE)
            conn.commit()
        command.upgrade(alembic_config(conn), revision)
        conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    with _migration_lock(engine), engine.connect() as conn:
        command.downgrade(alembic_config(conn), revision)
        conn.commit()


def _needs_baseline_stamp(conn: Connection) -> bool:
    tables = set(inspect(conn).get_table_names())
    return "invocation" in tables and "alembic_version" not in tables


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    name = engine.dialect.name
    if name == "postgresql":
        with engine.connect() as lock_conn:
            lock_conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            lock_conn.commit()
            try:
                yield
            finally:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                lock_conn.commit()
        return
    database = engine.url.database if name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        yield  # in-memory or another dialect: nothing shared to serialise
        return
    lock_path = os.path.abspath(database) + ".migrate.lock"
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
