"""The audit store: invocations, cards, feedback, JWT replay cache, over the spool and writer thread of
``audit.writer`` (nothing lost, nothing blocking).

Record types: a spool frame's ``meta["type"]`` names its shipper (``SHIPPERS``); ``invocation`` is the
one call record. Another type (e.g. a compact row for a refused call) adds a shipper and a ``record_*``
method that calls ``self._spool_record``.
"""
from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Delete, String, delete, select, text
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import CDSError
from ..protocol.card import card_topic
from .compact import SnapshotEncoder, aggregate_gaps, cap_facts, compact_snapshot, encode_json, snapshot_json
from .database import is_outage, make_engine
from .invocation import Invocation, snapshot
from .schema import CardRow, FeedbackRow, InvocationRow, RecordSnapshotRow, SeenJti
from .writer import SpoolWriter, describe_error

log = logging.getLogger(__name__)
_DATETIME_COLUMNS = ("received_at", "evaluated_at")


class AuditStoreUnavailable(CDSError):
    """503: the audit store could not take a write the client waits for (feedback)."""

    status = 503
    code = "audit-store-unavailable"
    fhir_code = "transient"


class AuditStore(SpoolWriter):
    def __init__(self, url: str, *, create: bool = True, background: bool = True,
                 retry_delays: tuple[float, ...] = (0.2, 1.0), spool_dir: str = "", spool_fsync: str = "interval",
                 segment_bytes: int = 16 * 1024 * 1024):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        super().__init__(url, background=background, retry_delays=retry_delays, spool_dir=spool_dir,
                         spool_fsync=spool_fsync, segment_bytes=segment_bytes)
        self.encoder = SnapshotEncoder()
        self.shippers = {
            "invocation": self._ship_invocations,
        }
        if create:
            try:
                self.migrate()
            except Exception as exc:  # a database outage at start-up must not stop the service from answering
                if not (background and is_outage(exc)):
                    raise
                self._needs_migration = True
                self._note_error(describe_error(exc))
                log.error("audit store unreachable at start-up (%s): calls are answered and spooled; the writer "
                          "migrates and ships when it is back", self.last_error)
        if background:
            self._ensure_writer()  # ships spool files left by dead processes right away

    # ------------------------------------------------------------------ schema
    def migrate(self) -> None:
        from .migrate import upgrade

        upgrade(self.engine)

    # ------------------------------------------------------------------ health
    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    # ------------------------------------------------------------------ invocations
    def record_invocation(self, inv: Invocation) -> None:
        """Spool the call's audit record (durable before the response goes out); never raises."""
        try:
            meta, blob = invocation_record(inv)
            self._spool_record(meta, blob)
        except Exception:  # never let the audit reach the client
            self.dropped += 1
            self._note_error("could not spool an audit record")
            log.exception("could not spool the audit record for hookInstance=%s", getattr(inv, "hook_instance", None))

    def _ship_invocations(self, s: Session, items: list[tuple[dict[str, Any], bytes]]) -> None:
        """Invocation rows (cards and facts compressed), their card rows, and each snapshot once (by hash)."""
        uids = [m["uid"] for m, _ in items]
        existing = set(s.scalars(select(InvocationRow.record_uid).where(InvocationRow.record_uid.in_(uids))))
        snapshots: dict[str, dict[str, Any]] = {}
        rows: list[tuple[InvocationRow, list[dict[str, Any]]]] = []
        for meta, raw in items:
            if meta["uid"] in existing:
                continue  # already shipped (a spool read again after a crash): shipping is idempotent
            existing.add(meta["uid"])
            digest = None
            if raw:
                digest, content = self.encoder.encode(raw)
                if digest not in snapshots:
                    snapshots[digest] = {"hash": digest, "content": content, "raw_bytes": len(raw),
                                         "created_at": _parse_dt(meta.get("received_at")) or datetime.now(UTC)}
            row = InvocationRow(**row_values(meta, digest))
            s.add(row)
            rows.append((row, meta.get("cards") or []))
        if snapshots:
            have = set(s.scalars(select(RecordSnapshotRow.hash).where(RecordSnapshotRow.hash.in_(list(snapshots)))))
            new = [v for k, v in snapshots.items() if k not in have]
            if new:
                s.execute(_insert_ignore(s, RecordSnapshotRow), new)
        if not rows:
            return
        s.flush()
        cards = []
        for row, card_list in rows:
            for card in card_list:
                                cards.append({"uuid": str(card.get("uuid", ""))[:64], "invocation_id": row.id, "service_id": row.service_id,
                              "rule": card_topic(card)[:100], "indicator": str(card.get("indicator", ""))[:16],
                              "created_at": row.received_at})
        if cards:
            s.execute(_insert_ignore(s, CardRow), cards)
            self._link_early_feedback(s, cards)

    @staticmethod
    def _link_early_feedback(s: Session, cards: list[dict[str, Any]]) -> None:
        """Feedback that arrived before its call was shipped (kept as an unknown card) is linked now."""
        by_uuid = {c["uuid"]: c for c in cards}
        early = s.scalars(select(FeedbackRow).where(FeedbackRow.unknown_card.is_(True),
                                                    FeedbackRow.card_uuid.in_(list(by_uuid)))).all()
        for fb in early:
            card = by_uuid[fb.card_uuid]
            fb.invocation_id, fb.rule, fb.unknown_card = card["invocation_id"], card["rule"], False

    # ------------------------------------------------------------------ reading
    def get(self, hook_instance: str) -> dict[str, Any] | None:
        """The newest stored call with this hookInstance as ``queries.invocation_dict``: its cards, the facts
        each card used, the gaps (first few + ``gapCounts``) and ``recordSnapshot``, the decompressed
        normalised record (None for calls that built none). Records still in the spool are not seen."""
        from .queries import find_invocations, invocation_dict

        with self.sessions() as s:
            found = find_invocations(s, hook_instance)
            return invocation_dict(found[-1]) if found else None

    # ------------------------------------------------------------------ feedback
    def record_feedback(self, service_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store feedback once per (card, outcome, timestamp); unknown cards are kept and flagged (and linked
        when their call is shipped later)."""
        if self._pending:
            self.flush(timeout=1.0)  # this worker's calls first, so that their cards are known
        try:
            return self._record_feedback(service_id, items)
        except SQLAlchemyError as exc:
            self._note_error(f"feedback: {type(exc).__name__}")
            log.error("audit store unavailable for feedback on %s: %s", service_id, type(exc).__name__)
            raise AuditStoreUnavailable("the audit store is unavailable; send the feedback again later") from None

    def _record_feedback(self, service_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = []
        now = datetime.now(UTC)
        with self.sessions() as s:
            for item in items:
                card_id = str(item["card"])[:200]
                card = s.get(CardRow, card_id) if len(card_id) <= 64 else None
                override = item.get("overrideReason") or {}
                reason = override.get("reason") or {}
                reason = reason if isinstance(reason, dict) else {}
                row = FeedbackRow(
                    service_id=service_id[:200],
                    card_uuid=card_id,
                    invocation_id=card.invocation_id if card else None,
                    rule=card.rule if card else None,
                    outcome=item["outcome"],
                    outcome_timestamp=str(item["outcomeTimestamp"])[:64],
                    accepted_suggestions=[a.get("id") for a in item.get("acceptedSuggestions") or []],
                    override_code=_cut(reason.get("code"), 200),
                    override_system=_cut(reason.get("system"), 500),
                    override_display=_cut(reason.get("display"), 500),
                    override_comment=override.get("userComment"),
                    unknown_card=card is None,
                    received_at=now,
                )
                if card is None:
                    log.warning("feedback for unknown card %s on %s: kept and flagged", card_id, service_id)
                try:
                    with s.begin_nested():
                        s.add(row)
                    results.append({"card": item["card"], "stored": True, "unknownCard": card is None})
                except IntegrityError:
                    results.append({"card": item["card"], "stored": False, "duplicate": True})
            s.commit()
        return results

    # ------------------------------------------------------------------ retention
    def purge(self, older_than_days: int, now: datetime | None = None) -> dict[str, int]:
        """Delete invocations (with their cards) and feedback received more than ``older_than_days`` ago,
        and expired JWT ids. Returns how many rows went from each table."""
        if older_than_days < 0:
            raise ValueError("older_than_days must be >= 0")
        cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
        with self.sessions.begin() as s:
            old = select(InvocationRow.id).where(InvocationRow.received_at < cutoff)
            cards = _deleted(s, delete(CardRow).where(CardRow.invocation_id.in_(old)))
            feedback = _deleted(s, delete(FeedbackRow).where(FeedbackRow.received_at < cutoff))
            invocations = _deleted(s, delete(InvocationRow).where(InvocationRow.received_at < cutoff))
            used = select(InvocationRow.snapshot_hash).where(InvocationRow.snapshot_hash.is_not(None))
            snapshots = _deleted(s, delete(RecordSnapshotRow).where(RecordSnapshotRow.created_at < cutoff,
                                                                    RecordSnapshotRow.hash.not_in(used)))
        return {"invocation": invocations, "card": cards, "feedback": feedback, "record_snapshot": snapshots,
                "seen_jti": self.purge_jti()}

    # ------------------------------------------------------------------ JWT replay cache
    def remember_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """True if (issuer, jti) was not seen before (and is now remembered); False on replay."""
        try:
            with self.sessions.begin() as s:
                s.add(SeenJti(issuer=issuer, jti=jti, expires_at=expires_at))
            return True
        except IntegrityError:
            with self.sessions.begin() as s:  # an expired entry may be reused
                row = s.get(SeenJti, (issuer, jti))
                if row is not None and _aware(row.expires_at) < datetime.now(UTC):
                    row.expires_at = expires_at
                    return True
            return False

    def purge_jti(self) -> int:
        with self.sessions.begin() as s:
            return _deleted(s, delete(SeenJti).where(SeenJti.expires_at < datetime.now(UTC)))


def _deleted(s: Session, statement: Delete) -> int:
    """Run a DELETE; how many rows it removed (a DML statement's result is a CursorResult, typed as Result)."""
    return cast(CursorResult[Any], s.execute(statement)).rowcount or 0


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _cut(value: Any, n: int) -> str | None:
    return None if value is None else str(value)[:n]


def _parse_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _insert_ignore(s: Session, model: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL): rows already there are kept as they are."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(model).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model).on_conflict_do_nothing()


_RECORD_FIELDS = ("service_id", "hook", "hook_instance", "patient_id", "user_id", "encounter_id", "fhir_server",
                  "received_at", "evaluated_at", "latency_ms", "status", "error_code", "error", "knowledge_version",
                  "rules_evaluated", "rules_fired", "rule_errors", "cards", "prefetch", "fetch_ms", "client")


def invocation_record(inv: Invocation) -> tuple[dict[str, Any], bytes]:
    """The compact audit record of a call (JSON-able meta) and its snapshot as canonical JSON (b"" when none).
    Hashing and compression are the writer's (off the response path)."""
    meta: dict[str, Any] = {"type": "invocation", "uid": str(uuid.uuid4())}
    for name in _RECORD_FIELDS:
        value = getattr(inv, name)
        meta[name] = value.isoformat() if isinstance(value, datetime) else value
    gaps, counts = aggregate_gaps(inv.gaps or [])
    meta["gaps"], meta["gap_counts"] = gaps, counts or None
    meta["facts"] = cap_facts(inv.facts or {})
    snap = inv.record_snapshot
    if snap is None and inv.record is not None:
        snap = snapshot(inv.record)
    return meta, (snapshot_json(compact_snapshot(snap)) if snap is not None else b"")


def row_values(meta: dict[str, Any], snapshot_hash: str | None) -> dict[str, Any]:
    """A spooled record as InvocationRow values; strings cut to their column length (ids come from clients)."""
    out: dict[str, Any] = {"record_uid": meta["uid"], "snapshot_hash": snapshot_hash,
                           "gap_counts": meta.get("gap_counts"), "gaps": meta.get("gaps") or [],
                           "inline_cards": [], "inline_facts": {},
                           "detail": encode_json({"cards": meta.get("cards") or [], "facts": meta.get("facts") or {}})}
    columns = InvocationRow.__table__.columns
    for name in _RECORD_FIELDS:
        if name == "cards":
            continue
        value = meta.get(name)
        if name in _DATETIME_COLUMNS:
            value = _parse_dt(value)
        col = columns[name]
        if isinstance(col.type, String) and col.type.length and isinstance(value, str):
            value = value[: col.type.length]
        out[name] = value
    for name in ("rules_evaluated", "rules_fired"):
        out[name] = out[name] or []
    for name in ("rule_errors", "prefetch", "fetch_ms"):
        out[name] = out[name] or {}
    return out
