"""Audit store tables (SQLAlchemy 2). Migrations live in audit/migrations (Alembic)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class InvocationRow(Base):
    __tablename__ = "invocation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hook_instance: Mapped[str | None] = mapped_column(String(200), index=True)
    service_id: Mapped[str] = mapped_column(String(200), index=True)
    hook: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(String(200), index=True)
    user_id: Mapped[str | None] = mapped_column(String(300))
    encounter_id: Mapped[str | None] = mapped_column(String(200))
    fhir_server: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    evaluated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer, index=True)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    knowledge_version: Mapped[str | None] = mapped_column(String(64))
    rules_evaluated: Mapped[list] = mapped_column(JSON, default=list)
    rules_fired: Mapped[list] = mapped_column(JSON, default=list)
    rule_errors: Mapped[dict] = mapped_column(JSON, default=dict)
    cards: Mapped[list] = mapped_column(JSON, default=list)
    gaps: Mapped[list] = mapped_column(JSON, default=list)
    facts: Mapped[dict] = mapped_column(JSON, default=dict)
    record_snapshot: Mapped[dict | None] = mapped_column(JSON)
    prefetch: Mapped[dict] = mapped_column(JSON, default=dict)
    fetch_ms: Mapped[dict] = mapped_column(JSON, default=dict)
    client: Mapped[str | None] = mapped_column(String(500))  # verified JWT iss/sub/tenant, never the token


class CardRow(Base):
    """One row per card returned, so feedback can be linked by card uuid."""

    __tablename__ = "card"
    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    invocation_id: Mapped[int] = mapped_column(ForeignKey("invocation.id", ondelete="CASCADE"), index=True)
    service_id: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(100), index=True)
    indicator: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class FeedbackRow(Base):
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("service_id", "card_uuid", "outcome", "outcome_timestamp", name="uq_feedback_once"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(200), index=True)
    card_uuid: Mapped[str] = mapped_column(String(200), index=True)
    invocation_id: Mapped[int | None] = mapped_column(Integer, index=True)
    rule: Mapped[str | None] = mapped_column(String(100), index=True)
    outcome: Mapped[str] = mapped_column(String(32))
    outcome_timestamp: Mapped[str] = mapped_column(String(64))
    accepted_suggestions: Mapped[list] = mapped_column(JSON, default=list)
    override_code: Mapped[str | None] = mapped_column(String(200))
    override_system: Mapped[str | None] = mapped_column(String(500))
    override_display: Mapped[str | None] = mapped_column(String(500))
    override_comment: Mapped[str | None] = mapped_column(Text)
    unknown_card: Mapped[bool] = mapped_column(default=False)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SeenJti(Base):
    """JWT replay cache shared by every worker and instance (the service's database)."""

    __tablename__ = "seen_jti"
    issuer: Mapped[str] = mapped_column(String(500), primary_key=True)
    jti: Mapped[str] = mapped_column(String(500), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


Index("ix_invocation_service_received", InvocationRow.service_id, InvocationRow.received_at)
