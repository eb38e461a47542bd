"""Audit store tables (SQLAlchemy 2). Migrations live in audit/migrations (Alembic)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class InvocationRow(Base):
    __tablename__ = "invocation"
    __table_args__ = (UniqueConstraint("record_uid", name="uq_invocation_record_uid"),)
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
    # rows written before revision 0003 keep cards and facts inline; newer rows keep them in ``detail``
    inline_cards: Mapped[list] = mapped_column("cards", JSON, default=list)
    gaps: Mapped[list] = mapped_column(JSON, default=list)
    inline_facts: Mapped[dict] = mapped_column("facts", JSON, default=dict)
    detail: Mapped[bytes | None] = mapped_column(LargeBinary)  # zlib-compressed JSON {"cards": [...], "facts": {...}}
    # rows written before revision 0003 keep their snapshot inline; newer rows reference a RecordSnapshotRow
    inline_snapshot: Mapped[dict | None] = mapped_column("record_snapshot", JSON)
    snapshot_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    gap_counts: Mapped[dict | None] = mapped_column(JSON)  # data-gap kind -> how many (``gaps`` keeps the first few)
    record_uid: Mapped[str | None] = mapped_column(String(36))  # the spool's id: shipping is idempotent
    prefetch: Mapped[dict] = mapped_column(JSON, default=dict)
    fetch_ms: Mapped[dict] = mapped_column(JSON, default=dict)
    client: Mapped[str | None] = mapped_column(String(500))  # verified JWT iss/sub/tenant, never the token
    snapshot_row: Mapped[RecordSnapshotRow | None] = relationship(
        primaryjoin=lambda: foreign(InvocationRow.snapshot_hash) == RecordSnapshotRow.hash, lazy="selectin", viewonly=True)

    def _detail(self) -> dict[str, Any]:
        cached = self.__dict__.get("_decoded_detail")
        if cached is None:
            from .compact import decode_json

            cached = self.__dict__["_decoded_detail"] = decode_json(self.detail) if self.detail else {}
        return cached

    @property
    def cards(self) -> list[dict[str, Any]]:
        """The cards returned, as sent."""
        return self._detail().get("cards", []) if self.detail else (self.inline_cards or [])

    @property
    def facts(self) -> dict[str, list[dict[str, Any]]]:
        """rule id -> the facts its card used."""
        return self._detail().get("facts", {}) if self.detail else (self.inline_facts or {})

    @property
    def record_snapshot(self) -> dict[str, Any] | None:
        """The normalised record this call was decided on (decompressed), or None (errors, 412s)."""
        if self.inline_snapshot is not None:
            return self.inline_snapshot
        if self.snapshot_row is None:
            return None
        cached = self.__dict__.get("_decoded_snapshot")
        if cached is None:
            from .compact import decode_json

            cached = self.__dict__["_decoded_snapshot"] = decode_json(self.snapshot_row.content)
        return cached


class RecordSnapshotRow(Base):
    """A normalised record, zlib-compressed JSON, stored once and referenced by its SHA-256."""

    __tablename__ = "record_snapshot"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    raw_bytes: Mapped[int] = mapped_column(Integer)  # size before compression
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


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
