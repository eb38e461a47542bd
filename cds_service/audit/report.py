"""Usage report over a time window: per rule (evaluated, fired, cards by indicator, feedback) and per
service (calls, errors, 412s, latency percentiles)."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ..protocol.card import card_topic
from .queries import feedback_for, iter_invocations, latest_feedback, unknown_card_feedback

INDICATORS = ("critical", "warning", "info")


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least p% of values at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def build_report(session: Session, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "evaluated": 0, "fired": 0, "cards": {i: 0 for i in INDICATORS}, "accepted": 0, "overridden": 0,
        "overrideReasons": Counter()})
    services: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "ok": 0, "errors": 0, "412": 0, "latencies": []})
    ids: list[int] = []
    for row in iter_invocations(session, since, until):
        ids.append(row.id)
        svc = services[row.service_id]
        svc["calls"] += 1
        svc["latencies"].append(row.latency_ms or 0.0)
        if row.status == 200:
            svc["ok"] += 1
        elif row.status == 412:
            svc["412"] += 1
        else:
            svc["errors"] += 1
        for rule in row.rules_evaluated or []:
            rules[rule]["evaluated"] += 1
        for rule in set(row.rules_fired or []):
            rules[rule]["fired"] += 1
        for card in row.cards or []:
            rule = card_topic(card)
            indicator = card.get("indicator", "")
            cards = rules[rule]["cards"]
            cards[indicator] = cards.get(indicator, 0) + 1
    for fb in latest_feedback(feedback_for(session, ids)).values():
        r = rules[fb.rule or ""]
        if fb.outcome == "accepted":
            r["accepted"] += 1
        elif fb.outcome == "overridden":
            r["overridden"] += 1
            reason = fb.override_code or ("(comment only)" if fb.override_comment else "(no reason)")
            r["overrideReasons"][reason] += 1
    out_rules = {}
    for rule, r in sorted(rules.items()):
        answered = r["accepted"] + r["overridden"]
        out_rules[rule] = {**r, "overrideReasons": dict(sorted(r["overrideReasons"].items(), key=lambda kv: (-kv[1], kv[0]))),
                           "acceptanceRate": round(r["accepted"] / answered, 4) if answered else None}
    out_services = {}
    for sid, s in sorted(services.items()):
        lat = s.pop("latencies")
        p50, p95 = percentile(lat, 50), percentile(lat, 95)
        out_services[sid] = {**s, "p50Ms": round(p50, 1) if p50 is not None else None,
                             "p95Ms": round(p95, 1) if p95 is not None else None}
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "invocations": len(ids),
        "rules": out_rules,
        "services": out_services,
        "unknownCardFeedback": len(unknown_card_feedback(session, since, until)),
    }


def _numeric(text: str) -> bool:
    return text in ("", "-") or text.rstrip("%").replace(".", "", 1).isdigit()


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_numeric(r[i]) for r in cells[1:]) for i in range(len(headers))]  # numbers right-aligned
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    window = f"{report['since'] or 'beginning'} .. {report['until'] or 'now'}"
    parts = [f"Audit report {window}: {report['invocations']} invocation(s)", "", "Per rule"]
    rows = []
    for rule, r in report["rules"].items():
        rate = f"{r['acceptanceRate'] * 100:.1f}%" if r["acceptanceRate"] is not None else "-"
        reasons = ", ".join(f"{k}={v}" for k, v in r["overrideReasons"].items()) or "-"
        rows.append([rule, r["evaluated"], r["fired"], r["cards"].get("critical", 0), r["cards"].get("warning", 0),
                     r["cards"].get("info", 0), r["accepted"], r["overridden"], rate, reasons])
    parts.append(_table(["rule", "evaluated", "fired", "critical", "warning", "info", "accepted", "overridden",
                         "acceptance", "override reasons"], rows) if rows else "(no rules evaluated)")
    parts += ["", "Per service (errors exclude 412; latency: nearest-rank percentiles over all calls)"]
    srows = [[sid, s["calls"], s["ok"], s["errors"], s["412"], s["p50Ms"], s["p95Ms"]] for sid, s in report["services"].items()]
    parts.append(_table(["service", "calls", "200", "errors", "412", "p50 ms", "p95 ms"], srows) if srows else "(no calls)")
    parts += ["", "Acceptance rate = accepted / (accepted + overridden), latest feedback per card.",
              f"Feedback for unknown cards (kept, flagged): {report['unknownCardFeedback']}"]
    return "\n".join(parts)
