"""Alembic environment for the audit store: always run programmatically (audit/migrate.py) on a given connection."""
from __future__ import annotations

from alembic import context

from cds_service.audit.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the audit migrations through cds_service.audit.migrate.upgrade() "
                       "or `cds-service audit migrate`, which hand Alembic a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE goes through batch mode
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
