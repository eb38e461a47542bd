"""The service layer: validate a hook call, complete its prefetch, build the record, run rules, make cards.

No Flask here: the HTTP layer hands in the parsed body and gets a response plus an audit record.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from .cards import GAP_RULE, InvalidSuggestion, build_card, gap_finding, validate_fhir_r4
from .cards.compose import CARD_NAME, compose, source_seen
from .config import Settings
from .definitions import ServiceCatalog, ServiceDefinition
from .errors import PrefetchUnavailable, UnknownService
from .knowledge import Knowledge
from .prefetch.gateway import AddressPolicy, ByteBudget, FhirGateway, has_dot_segment
from .prefetch.templates import TemplateError, render
from .protocol.request import HookRequest, parse_hook_request
from .record.builder import RecordBuilder, ResolvedData, iter_resources
from .record.lean import MODELS
from .record.model import PatientRecord
from .rules import RULES
from .rules.base import Finding, Rule, RuleContext
from .rules.common import with_unreadable_named

log = logging.getLogger(__name__)
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,256}")  # FHIR R4 id characters (length lenient: some EHRs exceed 64)
MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationStatement", "Medication"})


@dataclass
class Invocation:
    """Everything the audit store keeps about one call (never tokens)."""

    service_id: str
    hook: str | None = None
    hook_instance: str | None = None
    patient_id: str | None = None
    user_id: str | None = None
    encounter_id: str | None = None
    fhir_server: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    evaluated_at: datetime | None = None  # the `now` the rules saw
    latency_ms: float = 0.0
    status: int = 200
    error_code: str | None = None
    error: str | None = None
    knowledge_version: str | None = None
    rules_evaluated: list[str] = field(default_factory=list)
    rules_fired: list[str] = field(default_factory=list)
    rule_errors: dict[str, str] = field(default_factory=dict)
    cards: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # rule id -> facts used
    record_snapshot: dict[str, Any] | None = None  # normalised record, for replay
    prefetch: dict[str, str] = field(default_factory=dict)  # key -> prefetched|fetched|unavailable
    fetch_ms: dict[str, float] = field(default_factory=dict)
    client: str | None = None  # the verified JWT issuer (+ sub, tenant); never the token
    # the built record; serialised to record_snapshot by the audit writer, off the response path
    record: PatientRecord | None = field(default=None, repr=False, compare=False)


def snapshot(rec: PatientRecord) -> dict[str, Any]:
    """The normalised record as JSON: enough to replay every rule without the EHR."""
    return {
        "patientId": rec.patient_id,
        "birthDate": rec.birth_date.isoformat() if rec.birth_date else None,
        "sex": rec.sex,
        "labs": {k: [r.to_fact() for r in v] for k, v in rec.labs.items()},
        "medications": [m.to_fact() for m in rec.medications],
        "draftMedications": [m.to_fact() for m in rec.draft_medications],
        "draftServices": [
            {"source": d.source.to_json(), "label": d.label, "codes": [list(c) for c in d.codes], "selected": d.selected}
            for d in rec.draft_services
        ],
        "conditions": [c.to_fact() for c in rec.conditions],
        "gaps": [g.to_json() for g in rec.gaps],
        "available": rec.available,
        "unreadable": {k: [u.to_fact() for u in v] for k, v in rec.unreadable.items()},
        "notes": [g.to_json() for g in rec.notes],
    }


def evaluate_rules(ctx: RuleContext, rules: tuple[Rule, ...] = RULES) -> tuple[list[Finding], list[str], dict[str, str]]:
    """Run every applicable rule; a failing rule is logged and reported, never fatal."""
    findings: list[Finding] = []
    evaluated: list[str] = []
    errors: dict[str, str] = {}
    for rule in rules:
        if not rule.applies(ctx):
            continue
        evaluated.append(rule.id)
        try:
            f = rule.evaluate(ctx)
        except Exception as exc:
            log.exception("rule %s failed", rule.id)
            errors[rule.id] = f"{type(exc).__name__}: {exc}"
            continue
        if f is not None:
            findings.append(with_unreadable_named(ctx, f))  # issue 10: newer unreadable results named on every card
    suppressed = {s for rule in rules if rule.id in {f.rule for f in findings} for s in rule.suppresses}
    return [f for f in findings if f.rule not in suppressed], evaluated, errors


class Engine:
    def __init__(
        self,
        settings: Settings,
        knowledge: Knowledge,
        catalog: ServiceCatalog,
        gateway: FhirGateway | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.settings = settings
        self.knowledge = knowledge
        self.catalog = catalog
        self.gateway = gateway or FhirGateway(
            call_timeout=settings.fetch_call_timeout_seconds,
            retries=settings.fetch_retries,
            page_limit=settings.fetch_page_limit,
            max_page_bytes=settings.fetch_max_page_bytes,
            max_call_bytes=settings.fetch_max_call_bytes,
            address_policy=AddressPolicy.from_settings(settings.allow_http_fhir, settings.fhir_server_allowlist),
        )
        self.clock = clock or (lambda: datetime.now(UTC))

    # ------------------------------------------------------------------ hook call
    def handle(self, service_id: str, body: Any, invocation: Invocation) -> dict[str, Any]:
        started = time.monotonic()
        service = self.catalog.get(service_id)
        if service is None:
            raise UnknownService(f"no CDS service with id {service_id!r}")
        invocation.knowledge_version = self.knowledge.version
        if isinstance(body, dict):
            ctx = body.get("context") if isinstance(body.get("context"), dict) else {}
            invocation.hook = body.get("hook") if isinstance(body.get("hook"), str) else None
            invocation.hook_instance = body.get("hookInstance") if isinstance(body.get("hookInstance"), str) else None
            invocation.patient_id = ctx.get("patientId") if isinstance(ctx.get("patientId"), str) else None
            invocation.user_id = ctx.get("userId") if isinstance(ctx.get("userId"), str) else None
        req = parse_hook_request(body, service)
        invocation.encounter_id = req.encounter_id
        invocation.fhir_server = req.fhir_server
        now = self.clock()
        invocation.evaluated_at = now
        data = self.complete_prefetch(service, req, now, started, invocation)
        builder = RecordBuilder(self.knowledge, now)
        record = builder.build(
            req.patient_id,
            data,
            draft_orders=req.context.get("draftOrders"),
            selections=req.context.get("selections") or (),
            extra_medications=data.values.pop("__medications__", None) or (),
        )
        if self.settings.strict_validation:
            strict_check(data, record)
        response, _ = self.decide(record, req.hook, req.hook_instance, now, invocation)
        invocation.record = record
        return response

    def decide(self, record: PatientRecord, hook: str, hook_instance: str, now: datetime,
               invocation: Invocation | None = None) -> tuple[dict[str, Any], list[Finding]]:
        """Rules + cards over a built record (also used by audit replay)."""
        ctx = RuleContext(record=record, knowledge=self.knowledge, now=now, hook=hook)
        findings, evaluated, errors = evaluate_rules(ctx)
        gap = gap_finding(record.gaps)
        if gap is not None:
            findings.append(gap)
        findings = compose(ctx, findings, [r.id for r in RULES] + [GAP_RULE])  # one problem, one card
        cited = source_seen(findings)
        cards = [build_card(f, hook_instance, self.knowledge,
                            f"the {CARD_NAME.get(cited[id(f)].rule, cited[id(f)].rule)} card" if id(f) in cited else None)
                 for f in findings]
        if invocation is not None:
            invocation.rules_evaluated = evaluated + ([GAP_RULE] if gap else [])
            invocation.rules_fired = [f.rule for f in findings]
            invocation.rule_errors = errors
            invocation.cards = cards
            invocation.gaps = [g.to_json() for g in record.gaps + record.notes]  # notes: audit only, no card
            invocation.facts = {f.rule: list(f.facts) for f in findings}
        return {"cards": cards}, findings

    # ------------------------------------------------------------------ prefetch completion
    def complete_prefetch(self, service: ServiceDefinition, req: HookRequest, now: datetime, started: float,
                          invocation: Invocation) -> ResolvedData:
        values: dict[str, Any] = {}
        unavailable: dict[str, str] = {}
        notes: dict[str, str] = {}
        to_fetch: dict[str, str] = {}
        budget = self.gateway.call_budget() if hasattr(self.gateway, "call_budget") else None  # bytes for this call
        key_types = {k: p.resource_type for k, p in service.prefetch.items()}
        for key, p in service.prefetch.items():
            given = req.prefetch.get(key)
            problem = _prefetch_problem(given, p.template, p.resource_type)
            if problem is None:
                values[key] = given
                invocation.prefetch[key] = "prefetched"
                continue
            if given is not None and problem != "absent":
                notes[key] = problem
            try:
                template = self.catalog.expand_knowledge_tokens(service, p.template, now)
                to_fetch[key] = render(template, req.context)
            except TemplateError as exc:
                unavailable[key] = str(exc)
                invocation.prefetch[key] = "unavailable"
        if to_fetch:
            reason = self._server_problem(req.fhir_server)
            if reason:
                for key in to_fetch:
                    unavailable[key] = (notes.get(key, "not prefetched") + f"; {reason}")
                    invocation.prefetch[key] = "unavailable"
            else:
                remaining = self.settings.fetch_deadline_seconds - (time.monotonic() - started)
                token = req.fhir_authorization.access_token if req.fhir_authorization else None
                results = self.gateway.fetch_many(req.fhir_server, token, to_fetch, max(0.05, remaining),  # type: ignore[arg-type]
                                                  **({"budget": budget} if budget else {}))
                for key, res in results.items():
                    invocation.fetch_ms[key] = round(res.elapsed_ms, 1)
                    if res.ok:
                        values[key] = res.data
                        invalid = notes.pop(key, None)
                        invocation.prefetch[key] = "fetched" + (f" (prefetch not usable: {invalid})" if invalid else "")
                        if invalid:
                            log.info("prefetch %s not usable (%s); fetched instead", key, invalid)
                        if res.truncated:
                            notes[key] = f"only the first {res.pages} page(s) were read ({res.truncated_why})"
                    else:
                        unavailable[key] = res.error or "could not be read"
                        invocation.prefetch[key] = "unavailable"
                        log.warning("prefetch %s unavailable for hookInstance %s: %s", key, req.hook_instance, res.error)
        missing_required = [k for k in service.required_keys() if k in unavailable]
        if missing_required:
            raise PrefetchUnavailable(
                "data the service needs could be neither prefetched nor fetched",
                details=[f"{k}: {unavailable[k]}" for k in missing_required],
                expression=[f"prefetch.{k}" for k in missing_required],
            )
        # medicationReference to Medication resources not in hand: fetch them too (same deadline)
        extra = self._fetch_referenced_medications(service, values, req, started, budget)
        if extra:
            values["__medications__"] = extra
        return ResolvedData(values=values, unavailable=unavailable, key_types=key_types, notes=notes)

    def _server_problem(self, fhir_server: str | None) -> str | None:
        if not fhir_server:
            return "no fhirServer was given to fetch it from"
        parts = urlsplit(fhir_server)
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment \
                or has_dot_segment(parts.path):
            return "fhirServer must be a plain base URL (no user info, query, fragment or dot segments)"
        if parts.scheme != "https" and not self.settings.allow_http_fhir:
            return "fhirServer is not https (CDS_ALLOW_HTTP_FHIR is off)"
        allow = self.settings.fhir_server_allowlist
        if allow and fhir_server.rstrip("/") not in {a.rstrip("/") for a in allow}:
            return "fhirServer is not on the configured allowlist"
        return None

    def _fetch_referenced_medications(self, service: ServiceDefinition, values: dict[str, Any], req: HookRequest,
                                      started: float, budget: ByteBudget | None = None) -> list[dict]:
        """Medication resources that medication keys or draft orders reference but nobody sent: fetched too."""
        if self._server_problem(req.fhir_server):
            return []
        have: set[str] = set()
        wanted: set[str] = set()
        medication_keys = [k for k, p in service.prefetch.items() if p.resource_type in MEDICATION_TYPES]
        sources = [values.get(k) for k in medication_keys] + [req.context.get("draftOrders")]
        for value in sources:
            for res, _ in iter_resources(value):
                if not isinstance(res, dict):
                    continue
                if res.get("resourceType") == "Medication" and isinstance(res.get("id"), str):
                    have.add(res["id"])
                ref = res.get("medicationReference")
                if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                    r = ref["reference"].strip()
                    if r.startswith("Medication/") or "/Medication/" in r:
                        mid = r.split("/_history/")[0].rstrip("/").split("/")[-1]
                        if FHIR_ID.fullmatch(mid) and mid.strip(".") != "":  # never ".", ".." or a query
                            wanted.add(mid)
                        else:
                            log.warning("medicationReference %r is not a FHIR id: not fetched", mid[:100])
        missing = sorted(wanted - have)
        if not missing:
            return []
        remaining = self.settings.fetch_deadline_seconds - (time.monotonic() - started)
        if remaining <= 0.05:
            return []
        token = req.fhir_authorization.access_token if req.fhir_authorization else None
        results = self.gateway.fetch_many(req.fhir_server, token, {f"Medication/{m}": f"Medication/{m}" for m in missing[:20]}, remaining,  # type: ignore[arg-type]
                                          **({"budget": budget} if budget else {}))
        return [r.data for r in results.values() if r.ok and isinstance(r.data, dict)]


def strict_check(data: ResolvedData, record: PatientRecord) -> None:
    """CDS_STRICT_VALIDATION: every resource read is also validated with the full R4B model; what fails is noted
    as a data gap (the lenient reading still decides what the rules see). Slow: for audits and testing EHRs."""
    for key, value in data.values.items():
        for res, _ in iter_resources(value):
            if not isinstance(res, dict) or res.get("resourceType") not in MODELS:
                continue
            try:
                validate_fhir_r4(res)
            except InvalidSuggestion as exc:
                label = f"{res.get('resourceType')}/{res.get('id')}" if res.get("id") else str(res.get("resourceType"))
                record.note_gap("strict-validation", f"{label} in {key} is not strictly valid R4: {'; '.join(str(exc).splitlines()[:3])}", key)


def _prefetch_problem(value: Any, template: str, rtype: str) -> str | None:
    """None when the prefetched value is usable; otherwise why it is not."""
    if value is None:
        return "absent"
    if not isinstance(value, dict):
        return f"prefetch value is a {type(value).__name__}, not a FHIR resource"
    got = value.get("resourceType")
    if got == "OperationOutcome":
        return "the EHR could not prefetch it (OperationOutcome)"
    is_search = "?" in template or "/" not in template
    expected = "Bundle" if is_search else rtype
    if got != expected:
        return f"prefetch value is a {got!r}, expected {expected}"
    if expected == "Bundle":
        entries = value.get("entry", [])
        if entries is not None and not isinstance(entries, (list, dict)):
            return "prefetch Bundle.entry is not an array"
    return None
