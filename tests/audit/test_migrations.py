"""Alembic migrations: from empty to head on both backends, models == migrations, down and up again, legacy stamp."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from cds_service.audit.database import make_engine
from cds_service.audit.migrate import current_revision, downgrade, head_revision, upgrade
from cds_service.audit.schema import Base
from cds_service.audit.store import AuditStore

TABLES = {"invocation", "card", "feedback", "seen_jti", "record_snapshot", "alembic_version"}


def test_upgrade_from_empty_matches_the_models(db_url):
    engine = make_engine(db_url)
    assert set(inspect(engine).get_table_names()) == set()
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) == TABLES
    assert current_revision(engine) == head_revision() == "0003"
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade(engine)
    assert current_revision(engine) == "0003"
    engine.dispose()


def test_a_database_made_before_migrations_is_stamped_and_upgraded(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0001")  # the spine's create_all schema had exactly the baseline tables
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    store = AuditStore(db_url)  # what a worker does at start-up
    assert current_revision(store.engine) == "0003"
    assert "client" in {c["name"] for c in inspect(store.engine).get_columns("invocation")}
    store.close()
    engine.dispose()


def test_upgrading_twice_is_a_no_op(sqlite_url):
    AuditStore(sqlite_url).close()
    store = AuditStore(sqlite_url)
    assert current_revision(store.engine) == "0003"
    store.close()


def test_a_plain_postgresql_url_uses_psycopg3(postgres_url):
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    assert plain != postgres_url
    store = AuditStore(plain)
    assert store.engine.url.drivername == "postgresql+psycopg" and current_revision(store.engine) == "0003"
    store.close()
