"""Compact audit records: snapshots stored once (content-addressed, compressed), cards and facts compressed,
gap counts, spool record ids.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_snapshot",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("raw_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_record_snapshot_created_at", "record_snapshot", ["created_at"])
    with op.batch_alter_table("invocation") as batch:
        batch.add_column(sa.Column("snapshot_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("gap_counts", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("record_uid", sa.String(36), nullable=True))
        batch.add_column(sa.Column("detail", sa.LargeBinary(), nullable=True))
        batch.create_index("ix_invocation_snapshot_hash", ["snapshot_hash"])
        batch.create_unique_constraint("uq_invocation_record_uid", ["record_uid"])


def downgrade() -> None:
    with op.batch_alter_table("invocation") as batch:
        batch.drop_constraint("uq_invocation_record_uid", type_="unique")
        batch.drop_index("ix_invocation_snapshot_hash")
        batch.drop_column("detail")
        batch.drop_column("record_uid")
        batch.drop_column("gap_counts")
        batch.drop_column("snapshot_hash")
    op.drop_index("ix_record_snapshot_created_at", "record_snapshot")
    op.drop_table("record_snapshot")
