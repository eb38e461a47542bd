"""Audit store baseline: invocation, card, feedback, seen_jti.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invocation",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("hook_instance", sa.String(200), nullable=True),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("hook", sa.String(64), nullable=True),
        sa.Column("patient_id", sa.String(200), nullable=True),
        sa.Column("user_id", sa.String(300), nullable=True),
        sa.Column("encounter_id", sa.String(200), nullable=True),
        sa.Column("fhir_server", sa.String(500), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("knowledge_version", sa.String(64), nullable=True),
        sa.Column("rules_evaluated", sa.JSON(), nullable=False),
        sa.Column("rules_fired", sa.JSON(), nullable=False),
        sa.Column("rule_errors", sa.JSON(), nullable=False),
        sa.Column("cards", sa.JSON(), nullable=False),
        sa.Column("gaps", sa.JSON(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("record_snapshot", sa.JSON(), nullable=True),
        sa.Column("prefetch", sa.JSON(), nullable=False),
        sa.Column("fetch_ms", sa.JSON(), nullable=False),
    )
    op.create_index("ix_invocation_hook_instance", "invocation", ["hook_instance"])
    op.create_index("ix_invocation_service_id", "invocation", ["service_id"])
    op.create_index("ix_invocation_patient_id", "invocation", ["patient_id"])
    op.create_index("ix_invocation_received_at", "invocation", ["received_at"])
    op.create_index("ix_invocation_status", "invocation", ["status"])
    op.create_index("ix_invocation_service_received", "invocation", ["service_id", "received_at"])

    op.create_table(
        "card",
        sa.Column("uuid", sa.String(64), primary_key=True),
        sa.Column("invocation_id", sa.Integer(), sa.ForeignKey("invocation.id", ondelete="CASCADE"), nullable=False),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_card_invocation_id", "card", ["invocation_id"])
    op.create_index("ix_card_rule", "card", ["rule"])
    op.create_index("ix_card_created_at", "card", ["created_at"])

    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("card_uuid", sa.String(200), nullable=False),
        sa.Column("invocation_id", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(100), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("outcome_timestamp", sa.String(64), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("override_code", sa.String(200), nullable=True),
        sa.Column("override_system", sa.String(500), nullable=True),
        sa.Column("override_display", sa.String(500), nullable=True),
        sa.Column("override_comment", sa.Text(), nullable=True),
        sa.Column("unknown_card", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("service_id", "card_uuid", "outcome", "outcome_timestamp", name="uq_feedback_once"),
    )
    op.create_index("ix_feedback_service_id", "feedback", ["service_id"])
    op.create_index("ix_feedback_card_uuid", "feedback", ["card_uuid"])
    op.create_index("ix_feedback_invocation_id", "feedback", ["invocation_id"])
    op.create_index("ix_feedback_rule", "feedback", ["rule"])

    op.create_table(
        "seen_jti",
        sa.Column("issuer", sa.String(500), primary_key=True),
        sa.Column("jti", sa.String(500), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_seen_jti_expires_at", "seen_jti", ["expires_at"])


def downgrade() -> None:
    op.drop_table("seen_jti")
    op.drop_table("feedback")
    op.drop_table("card")
    op.drop_table("invocation")
