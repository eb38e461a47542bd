"""Read side of the audit store: time windows, invocation rows, feedback, as plain dicts for the tools."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, overload

from sqlalchemy import select
from sqlalchemy.orm import Session

from .schema import CardRow, FeedbackRow, InvocationRow


def parse_when(value: str | None, *, end: bool = False) -> datetime | None:
    """ISO date or date-time -> aware UTC. A bare date as ``end`` means the end of that day (exclusive next midnight)."""
    if not value:
        return None
    v = value.strip()
    if len(v) == 10:
        d = date.fromisoformat(v)
        start = datetime.combine(d, time.min, tzinfo=UTC)
        return start + timedelta(days=1) if end else start
    dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


@overload
def aware(dt: datetime) -> datetime: ...
@overload
def aware(dt: None) -> None: ...
@overload
def aware(dt: datetime | None) -> datetime | None: ...


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive: they were written as UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def invocation_query(since: datetime | None = None, until: datetime | None = None, service: str | None = None,
                     newest_first: bool = False):
    q = select(InvocationRow)
    if since is not None:
        q = q.where(InvocationRow.received_at >= since)
    if until is not None:
        q = q.where(InvocationRow.received_at < until)
    if service:
        q = q.where(InvocationRow.service_id == service)
    order = InvocationRow.id.desc() if newest_first else InvocationRow.id
    return q.order_by(order)


def iter_invocations(session: Session, since: datetime | None = None, until: datetime | None = None,
                     service: str | None = None, rule: str | None = None, limit: int | None = None,
                     newest_first: bool = False) -> Iterator[InvocationRow]:
    """Invocation rows in ``[since, until)``; ``rule`` keeps calls in which that rule was evaluated."""
    q = invocation_query(since, until, service, newest_first)
    n = 0
    for row in session.execute(q.execution_options(yield_per=500)).scalars():
        if rule and rule not in (row.rules_evaluated or []):
            continue
        yield row
        n += 1
        if limit is not None and n >= limit:
            return


def find_invocations(session: Session, hook_instance: str) -> list[InvocationRow]:
    q = select(InvocationRow).where(InvocationRow.hook_instance == hook_instance).order_by(InvocationRow.id)
    return list(session.execute(q).scalars())


def feedback_for(session: Session, invocation_ids: list[int]) -> list[FeedbackRow]:
    if not invocation_ids:
        return []
    out: list[FeedbackRow] = []
    for i in range(0, len(invocation_ids), 500):
        chunk = invocation_ids[i:i + 500]
        out += session.execute(select(FeedbackRow).where(FeedbackRow.invocation_id.in_(chunk))
                               .order_by(FeedbackRow.id)).scalars()
    return out


def latest_feedback(rows: Iterable[FeedbackRow]) -> dict[str, FeedbackRow]:
    """The feedback that counts for each card (by uuid): the latest outcome, then the latest received (a card
    first overridden, then accepted, is accepted)."""
    latest: dict[str, FeedbackRow] = {}
    for fb in rows:
        prev = latest.get(fb.card_uuid)
        if prev is None or (fb.outcome_timestamp, fb.id) >= (prev.outcome_timestamp, prev.id):
            latest[fb.card_uuid] = fb
    return latest


def unknown_card_feedback(session: Session, since: datetime | None = None, until: datetime | None = None) -> list[FeedbackRow]:
    q = select(FeedbackRow).where(FeedbackRow.unknown_card.is_(True))
    if since is not None:
        q = q.where(FeedbackRow.received_at >= since)
    if until is not None:
        q = q.where(FeedbackRow.received_at < until)
    return list(session.execute(q.order_by(FeedbackRow.id)).scalars())


def cards_of(session: Session, invocation_ids: list[int]) -> list[CardRow]:
    out: list[CardRow] = []
    for i in range(0, len(invocation_ids), 500):
        out += session.execute(select(CardRow).where(CardRow.invocation_id.in_(invocation_ids[i:i + 500]))).scalars()
    return out


def _iso(dt: datetime | None) -> str | None:
    dt = aware(dt)
    return dt.isoformat() if dt else None


def invocation_dict(row: InvocationRow, *, snapshot: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": row.id,
        "hookInstance": row.hook_instance,
        "serviceId": row.service_id,
        "hook": row.hook,
        "patientId": row.patient_id,
        "userId": row.user_id,
        "encounterId": row.encounter_id,
        "client": row.client,
        "fhirServer": row.fhir_server,
        "receivedAt": _iso(row.received_at),
        "evaluatedAt": _iso(row.evaluated_at),
        "latencyMs": round(row.latency_ms or 0.0, 2),
        "status": row.status,
        "errorCode": row.error_code,
        "error": row.error,
        "knowledgeVersion": row.knowledge_version,
        "rulesEvaluated": row.rules_evaluated or [],
        "rulesFired": row.rules_fired or [],
        "ruleErrors": row.rule_errors or {},
        "cards": row.cards or [],
        "gaps": row.gaps or [],  # the first few (audit.compact.GAP_SAMPLE); all of them are counted in gapCounts
        "gapCounts": row.gap_counts or _count_kinds(row.gaps or []),
        "facts": row.facts or {},
        "prefetch": row.prefetch or {},
        "fetchMs": row.fetch_ms or {},
    }
    if snapshot:
        d["recordSnapshot"] = row.record_snapshot
    return d


def _count_kinds(gaps: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in gaps:
        out[str(g.get("kind", ""))] = out.get(str(g.get("kind", ""))) or 0
        out[str(g.get("kind", ""))] += 1
    return out


def feedback_dict(row: FeedbackRow) -> dict[str, Any]:
    return {
        "id": row.id, "serviceId": row.service_id, "card": row.card_uuid, "invocationId": row.invocation_id,
        "rule": row.rule, "outcome": row.outcome, "outcomeTimestamp": row.outcome_timestamp,
        "acceptedSuggestions": row.accepted_suggestions or [],
        "overrideReason": {"code": row.override_code, "system": row.override_system, "display": row.override_display,
                           "comment": row.override_comment} if (row.override_code or row.override_comment) else None,
        "unknownCard": bool(row.unknown_card), "receivedAt": _iso(row.received_at),
    }
