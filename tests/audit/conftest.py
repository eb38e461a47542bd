"""Audit test fixtures: hook request bodies, SQLite and PostgreSQL stores (PostgreSQL is required, never skipped)."""
from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine, text

from tests.helpers.lanes import require_env


def postgres_admin_url() -> str:
    return require_env("CDS_TEST_POSTGRES_URL", "the audit store must be tested on PostgreSQL too. Run the suite with "
                       "`bash scripts/test.sh` (it starts one), or `export CDS_TEST_POSTGRES_URL=$(bash scripts/postgres.sh start)`")


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    admin = postgres_admin_url()
    name = f"audit_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(admin)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/audit.sqlite3"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """Both backends: a fresh SQLite file, and a fresh PostgreSQL database (marked `postgres`: it is fetched by name)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/audit.sqlite3"
    return request.getfixturevalue("postgres_url")
