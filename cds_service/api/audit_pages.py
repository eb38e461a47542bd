"""Read-only audit pages under /audit/ (server-rendered, no JavaScript), only when CDS_AUDIT_UI is on.

Not a public blueprint: the app's client authentication (auth.py before_request) applies here too.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import Blueprint, Flask, render_template, request
from sqlalchemy import select

from ..audit.charts import DailySeries, rule_chart
from ..audit.queries import aware, cards_of, feedback_dict, feedback_for, invocation_dict, iter_invocations, latest_feedback
from ..audit.schema import InvocationRow
from ..errors import NotFound
from ..protocol.card import card_topic
from ..services import get_services

bp = Blueprint("audit", __name__, url_prefix="/audit", template_folder="templates",
               static_folder="static", static_url_path="/static")
RECENT = 50
MAX_DAYS = 366


def init_app(app: Flask) -> None:
    """Mount the pages when ``settings.audit_ui`` is true (CDS_AUDIT_UI; off by default)."""
    if get_services(app).settings.audit_ui:
        app.register_blueprint(bp)


@bp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"  # patient ids on the page
    return response


@bp.get("/")
def index():
    s = get_services()
    try:
        days = min(MAX_DAYS, max(1, int(request.args.get("days", "30"))))
    except ValueError:
        days = 30
    today = datetime.now(UTC).date()  # received_at is wall-clock time (not the engine's clock)
    first = today - timedelta(days=days - 1)
    since = aware_midnight(first)
    day_list = [first + timedelta(days=i) for i in range(days)]
    fired: dict[str, dict[Any, int]] = defaultdict(lambda: defaultdict(int))
    with s.store.sessions() as session:
        rows = list(iter_invocations(session, since=since))
        day_of = {r.id: aware(r.received_at).date() for r in rows}
        for r in rows:
            for rule in set(r.rules_fired or []):
                fired[rule][day_of[r.id]] += 1
        accepted: dict[str, dict[Any, int]] = defaultdict(lambda: defaultdict(int))
        answered: dict[str, dict[Any, int]] = defaultdict(lambda: defaultdict(int))
        for fb in latest_feedback(feedback_for(session, list(day_of))).values():
            if fb.invocation_id is None:  # feedback_for selects by invocation: never, but the column may be null
                continue
            day = day_of[fb.invocation_id]
            answered[fb.rule or ""][day] += 1
            if fb.outcome == "accepted":
                accepted[fb.rule or ""][day] += 1
        charts = [
            (rule, rule_chart(DailySeries(rule, day_list, [fired[rule][d] for d in day_list],
                                          [accepted[rule][d] for d in day_list], [answered[rule][d] for d in day_list])))
            for rule in sorted(set(fired) | set(answered))
        ]
        recent = [invocation_dict(r, snapshot=False) for r in
                  iter_invocations(session, limit=RECENT, newest_first=True)]
        outcome: dict[str, str | None] = {c.uuid: None for c in cards_of(session, [r["id"] for r in recent])}
        outcome |= {uuid: fb.outcome for uuid, fb in latest_feedback(feedback_for(session, [r["id"] for r in recent])).items()}
    return render_template("audit/index.html", charts=charts, recent=recent, outcome=outcome, days=days,
                           first=first, today=today, writer=s.store.stats(), knowledge_version=s.knowledge.version)


@bp.get("/invocations/<hook_instance>")
def evidence_by_hook_instance(hook_instance: str):
    """The same page addressed by hookInstance (what the EHR, the logs and `cds-service audit show` use)."""
    s = get_services()
    with s.store.sessions() as session:
        row = session.scalars(select(InvocationRow).where(InvocationRow.hook_instance == hook_instance[:200])
                              .order_by(InvocationRow.id.desc()).limit(1)).first()
        if row is None:
            raise NotFound(f"no audited invocation with hookInstance {hook_instance[:200]!r}")
        invocation_id = row.id
    return evidence(invocation_id)


@bp.get("/invocations/<int:invocation_id>")
def evidence(invocation_id: int):
    s = get_services()
    with s.store.sessions() as session:
        row = session.get(InvocationRow, invocation_id)
        if row is None:
            raise NotFound(f"no audited invocation {invocation_id}")
        inv = invocation_dict(row, snapshot=False)
        feedback = [feedback_dict(f) for f in feedback_for(session, [invocation_id])]
    cards = []
    for card in inv["cards"]:
        rule = card_topic(card)
        cards.append({"card": card, "rule": rule, "facts": [_fact_row(f) for f in inv["facts"].get(rule, [])],
                      "feedback": [f for f in feedback if f["card"] == card.get("uuid")]})
    return render_template("audit/invocation.html", inv=inv, cards=cards, feedback=feedback)


def aware_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _fact_row(f: dict[str, Any]) -> dict[str, Any]:
    """One evidence line: what, value + unit (and as reported), date, source resource id/version."""
    kind = f.get("kind", "")
    src = f.get("source") or {}
    source = f"{src.get('resourceType', '')}/{src.get('id') or '(no id)'}" if src else ""
    if src.get("versionId"):
        source += f"/_history/{src['versionId']}"
    if kind == "lab":
        value = f"{f.get('value')} {f.get('unit', '')}"
        reported = f"{f.get('originalValue')} {f.get('originalUnit', '')}"
        return {"kind": kind, "what": f.get("analyte", ""), "value": value,
                "reported": reported if reported != value else "", "date": f.get("effective"), "source": source,
                "extra": f"LOINC {f.get('code')}; status {f.get('status')}"}
    if kind == "medication":
        dose = f.get("dose") or {}
        value = f"{dose.get('value')} {dose.get('unit')}" if dose else ""
        return {"kind": kind, "what": f.get("label", ""), "value": value, "reported": "", "date": f.get("start"),
                "source": source, "extra": ", ".join(i.get("ingredient", "") for i in f.get("ingredients") or [])}
    if kind == "condition":
        return {"kind": kind, "what": f.get("label", ""), "value": f.get("clinicalStatus") or "", "reported": "",
                "date": f.get("onset"), "source": source, "extra": f.get("condition") or ""}
    if kind == "gap":
        return {"kind": kind, "what": f.get("what", ""), "value": "", "reported": "", "date": None,
                "source": f.get("key") or "", "extra": f.get("kind", "")}
    shown = {k: v for k, v in f.items() if k not in ("kind", "source")}
    return {"kind": kind or "fact", "what": f.get("label") or f.get("name") or "", "value": f.get("value", ""),
            "reported": "", "date": f.get("date") or f.get("effective"), "source": source,
            "extra": ", ".join(f"{k}={v}" for k, v in shown.items() if k not in ("label", "name", "value", "date", "effective"))}
