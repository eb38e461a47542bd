"""``cds-service audit``: list, show, export, report, replay, purge, migrate."""
from __future__ import annotations

import csv
import json
import os
import sys
from contextlib import nullcontext
from datetime import UTC
from typing import Any

import click

from ..config import Settings
from ..protocol.card import card_topic


def _url(value: str | None) -> str:
    return value or Settings.from_env().database_url


def _store(database_url: str | None, create: bool = False):
    """The audit store the command reads, said on stderr; never created by a command that only reads."""
    from .store import AuditStore

    url = _url(database_url)
    where = "--database-url" if database_url else ("CDS_DATABASE_URL" if "CDS_DATABASE_URL" in os.environ
                                                    else "the default")
    shown = _existing_database(url, where, create)
    click.echo(f"audit database: {shown} ({where})", err=True)
    return AuditStore(url, background=False)


def _existing_database(url: str, where: str, create: bool) -> str:
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from .database import is_memory_sqlite, make_engine, masked_url

    shown = masked_url(url)
    hint = ("run the command where the service runs, give --database-url (or set CDS_DATABASE_URL) as the "
            "service has it, or create an empty store with `cds-service audit migrate`")
    try:
        parsed = make_url(url)
    except Exception:
        raise click.ClickException(f"{where} {url!r} is not a database URL") from None
    if parsed.get_backend_name() == "sqlite" and not is_memory_sqlite(url):
        path = os.path.abspath(parsed.database or "")
        shown = f"{shown} ({path})"
        if not create and not os.path.exists(path):
            raise click.ClickException(f"no audit database at {path} ({where}); {hint}")
        return shown
    if create or is_memory_sqlite(url):
        return shown
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot open the audit database {shown} ({where}): "
                                   f"{str(getattr(exc, 'orig', exc)).splitlines()[0][:200]}") from None
    finally:
        engine.dispose()
    if "invocation" not in tables:
        raise click.ClickException(f"{shown} ({where}) has no audit tables; {hint}")
    return shown


def _window(since: str | None, until: str | None):
    from .queries import parse_when

    try:
        return parse_when(since), parse_when(until, end=True)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO date or date-time: {exc}") from None


db_option = click.option("--database-url", default=None, metavar="URL",
                         help="Audit store (default: CDS_DATABASE_URL, else sqlite:///cds-audit.sqlite3).")
since_option = click.option("--since", default=None, metavar="WHEN", help="From this ISO date/date-time (inclusive, UTC).")
until_option = click.option("--until", default=None, metavar="WHEN",
                            help="Up to this ISO date-time (exclusive); a bare date includes that whole day.")


@click.group()
def audit() -> None:
    """Audit trail: what the service told clinicians, on which data, and what they did with it."""


@audit.command()
@db_option
def migrate(database_url: str | None) -> None:
    """Create or upgrade the audit schema (Alembic head)."""
    from .migrate import current_revision

    store = _store(database_url, create=True)
    click.echo(f"audit schema at revision {current_revision(store.engine)}")
    store.close()


@audit.command("list")
@db_option
@since_option
@until_option
@click.option("--service", default=None, help="Only this service id.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
def list_(database_url: str | None, since: str | None, until: str | None, service: str | None, limit: int) -> None:
    """Recent invocations, newest first: when, service, hookInstance, patient, status, cards."""
    from .queries import aware, iter_invocations
    from .report import _table

    start, end = _window(since, until)
    store = _store(database_url)
    rows = []
    with store.sessions() as s:
        for r in iter_invocations(s, start, end, service, limit=limit, newest_first=True):
            cards = ",".join(f"{card_topic(c) or '?'}:{c.get('indicator', '')}"
                             for c in r.cards or []) or "-"
            rows.append([aware(r.received_at).strftime("%Y-%m-%d %H:%M:%S"), r.service_id, r.hook_instance or "-",
                         r.patient_id or "-", r.status, r.error_code or "", f"{r.latency_ms:.0f}", cards])
    store.close()
    if not rows:
        click.echo("no invocations")
        return
    click.echo(_table(["received (UTC)", "service", "hookInstance", "patient", "status", "error", "ms", "cards"], rows))


@audit.command()
@click.argument("hook_instance")
@db_option
@click.option("--snapshot/--no-snapshot", default=False, help="Include the stored record snapshot.")
def show(hook_instance: str, database_url: str | None, snapshot: bool) -> None:
    """Everything recorded about one hookInstance (request, answer, facts, feedback) as JSON."""
    from .queries import feedback_dict, feedback_for, find_invocations, invocation_dict

    store = _store(database_url)
    with store.sessions() as s:
        rows = find_invocations(s, hook_instance)
        out = []
        for r in rows:
            d = invocation_dict(r, snapshot=snapshot)
            d["feedback"] = [feedback_dict(f) for f in feedback_for(s, [r.id])]
            out.append(d)
    store.close()
    if not out:
        raise click.ClickException(f"no invocation with hookInstance {hook_instance!r}")
    click.echo(json.dumps(out[0] if len(out) == 1 else out, indent=2))


CSV_COLUMNS = ["id", "hookInstance", "serviceId", "hook", "patientId", "userId", "encounterId", "client", "receivedAt",
               "evaluatedAt", "latencyMs", "status", "errorCode", "error", "knowledgeVersion", "rulesEvaluated",
               "rulesFired", "cardCount", "cardIndicators", "gapCount", "cards", "facts", "gaps"]


def _csv_row(d: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: d[k] for k in CSV_COLUMNS if k in d and not isinstance(d[k], (list, dict))},
        "rulesEvaluated": ";".join(d["rulesEvaluated"]),
        "rulesFired": ";".join(d["rulesFired"]),
        "cardCount": len(d["cards"]),
        "cardIndicators": ";".join(c.get("indicator", "") for c in d["cards"]),
        "gapCount": len(d["gaps"]),
        "cards": json.dumps(d["cards"], separators=(",", ":")),
        "facts": json.dumps(d["facts"], separators=(",", ":")),
        "gaps": json.dumps(d["gaps"], separators=(",", ":")),
    }


@audit.command()
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default="ndjson", show_default=True)
@since_option
@until_option
@click.option("--service", default=None, help="Only this service id.")
@click.option("--rule", default=None, help="Only calls in which this rule was evaluated.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write here instead of stdout.")
def export(database_url: str | None, fmt: str, since: str | None, until: str | None, service: str | None,
           rule: str | None, output: str | None) -> None:
    """Invocations for your own analysis: CSV (one row per call, JSON in cells) or NDJSON (full rows + feedback)."""
    from .queries import feedback_dict, feedback_for, invocation_dict, iter_invocations

    start, end = _window(since, until)
    store = _store(database_url)
    n = 0
    with open(output, "w", encoding="utf-8", newline="") if output else nullcontext(sys.stdout) as fh:
        try:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n") if fmt == "csv" else None
            if writer:
                writer.writeheader()
            with store.sessions() as s:
                for r in iter_invocations(s, start, end, service, rule):
                    d = invocation_dict(r)
                    if writer:
                        writer.writerow(_csv_row(d))
                    else:
                        d["feedback"] = [feedback_dict(f) for f in feedback_for(s, [r.id])]
                        fh.write(json.dumps(d, separators=(",", ":")) + "\n")
                    n += 1
        finally:
            store.close()
    if output:
        click.echo(f"{n} invocation(s) written to {output}", err=True)


@audit.command()
@db_option
@since_option
@until_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report(database_url: str | None, since: str | None, until: str | None, as_json: bool) -> None:
    """Per rule: evaluated, fired, cards by indicator, accepted, overridden, reasons, acceptance rate.
    Per service: calls, errors, 412s, p50/p95 latency."""
    from .report import build_report, format_report

    start, end = _window(since, until)
    store = _store(database_url)
    with store.sessions() as s:
        data = build_report(s, start, end)
    store.close()
    click.echo(json.dumps(data, indent=2) if as_json else format_report(data))


@audit.command()
@db_option
@since_option
@until_option
@click.option("--knowledge", "knowledge_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Knowledge directory to replay with (default: the current one, CDS_KNOWLEDGE_DIR or packaged).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def replay(database_url: str | None, since: str | None, until: str | None, knowledge_dir: str | None,
           as_json: bool) -> None:
    """Re-run stored record snapshots through the knowledge and rules; exit 1 when any card would appear,
    disappear or change (indicator or summary), so it can gate a knowledge release."""
    from ..knowledge import load_knowledge
    from .queries import iter_invocations
    from .replay import replay as run_replay

    settings = Settings.from_env()
    knowledge = load_knowledge(knowledge_dir or settings.knowledge_dir or None)
    start, end = _window(since, until)
    store = _store(database_url)
    with store.sessions() as s:
        result = run_replay(iter_invocations(s, start, end), knowledge)
    store.close()
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(f"replayed {result.replayed} call(s) with knowledge {result.knowledge_version} "
                   f"({result.skipped} without a snapshot skipped)")
        per_rule = result.per_rule()
        for rule, counts in per_rule.items():
            click.echo(f"  {rule}: {counts['appear']} appear, {counts['disappear']} disappear, {counts['change']} change")
        for c in result.changes:
            before = f"{c.before['indicator']} {c.before['summary']!r}" if c.before else "-"
            after = f"{c.after['indicator']} {c.after['summary']!r}" if c.after else "-"
            click.echo(f"  [{c.change}] {c.rule} hookInstance={c.hook_instance} ({c.service_id}): {before} -> {after}")
        for e in result.errors:
            click.echo(f"  [error] hookInstance={e['hookInstance']}: {e['error']}")
        click.echo("CHANGED" if result.changed else "no change")
    sys.exit(1 if result.changed else 0)


@audit.command()
@db_option
@click.option("--older-than", "days", type=click.IntRange(0), default=None,
              help="Days to keep (default: CDS_AUDIT_RETENTION_DAYS; 0 there means keep forever).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(database_url: str | None, days: int | None, yes: bool) -> None:
    """Delete invocations, cards and feedback older than the retention period, and expired JWT ids."""
    if days is None:
        days = Settings.from_env().audit_retention_days
        if days <= 0:
            click.echo("CDS_AUDIT_RETENTION_DAYS is 0 (keep forever): nothing purged")
            return
    store = _store(database_url)
    cutoff, due = _purgeable(store, days)
    click.echo(f"{due['invocation']} invocation(s) with {due['card']} card(s), and {due['feedback']} feedback row(s), "
               f"were received before {cutoff:%Y-%m-%d %H:%M} UTC (older than {days} day(s))")
    if not yes:
        if not due["invocation"] and not due["feedback"]:
            click.echo("nothing to purge")
            store.close()
            return
        click.confirm("Delete them?", abort=True)
    counts = store.purge(days)
    store.close()
    click.echo("purged " + ", ".join(f"{n} {table}" for table, n in counts.items()))


def _purgeable(store: Any, days: int):
    """What ``purge(days)`` would delete, counted first (the store's own cutoff rule: received before now - days)."""
    from datetime import datetime, timedelta

    from sqlalchemy import func, select

    from .schema import CardRow, FeedbackRow, InvocationRow

    cutoff = datetime.now(UTC) - timedelta(days=days)
    with store.sessions() as s:
        old = select(InvocationRow.id).where(InvocationRow.received_at < cutoff)
        due = {
            "invocation": s.scalar(select(func.count()).select_from(InvocationRow).where(InvocationRow.received_at < cutoff)),
            "card": s.scalar(select(func.count()).select_from(CardRow).where(CardRow.invocation_id.in_(old))),
            "feedback": s.scalar(select(func.count()).select_from(FeedbackRow).where(FeedbackRow.received_at < cutoff)),
        }
    return cutoff, {k: int(v or 0) for k, v in due.items()}
