"""The service layer: one hook call as its steps, identify -> parse -> complete prefetch -> build record ->
decide -> respond (identify first: a call that parsing refuses is still audited with its identity).

No Flask here: the HTTP layer hands in the JSON body and gets a ``CallOutcome``, which it answers from
(``response()``) and turns into the audit record (``audit_fields()``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .cards import InvalidSuggestion, validate_fhir_r4
from .config import Settings
from .decide import Decision, decide
from .definitions import ServiceCatalog, ServiceDefinition
from .errors import UnknownService
from .knowledge import Knowledge
from .prefetch.completion import PrefetchCompletion, PrefetchResult
from .prefetch.deadline import Deadline
from .prefetch.gateway import AddressPolicy, FhirGateway
from .protocol.identity import CallIdentity, identify
from .protocol.request import HookRequest, parse_hook_request
from .record.builder import RecordBuilder, ResolvedData, iter_resources
from .record.lean import MODELS
from .record.model import PatientRecord


@dataclass
class CallOutcome:
    """What the steps of one call produced, each set once by its step; a step that failed leaves ``error``
    and the steps after it nothing. The audit record is made from this (``audit_fields``)."""

    identity: CallIdentity
    knowledge_version: str
    evaluated_at: datetime | None = None  # the `now` the rules saw
    prefetch: PrefetchResult | None = None
    record: PatientRecord | None = None
    decision: Decision | None = None
    error: Exception | None = None

    def response(self) -> dict[str, Any]:
        """The CDS Hooks response; raises the error of the step that failed."""
        if self.error is not None:
            raise self.error
        assert self.decision is not None  # every step ran
        return self.decision.response()

    def audit_fields(self) -> dict[str, Any]:
        """The audit record's fields (``audit.invocation.Invocation``) that this call's steps determined."""
        fields: dict[str, Any] = {**vars(self.identity), "knowledge_version": self.knowledge_version,
                                  "evaluated_at": self.evaluated_at}
        if self.prefetch is not None:
            fields.update(prefetch=self.prefetch.status, fetch_ms=self.prefetch.fetch_ms)
        d = self.decision
        if d is not None:
            fields.update(rules_evaluated=d.rules_evaluated, rules_fired=d.rules_fired, rule_errors=d.rule_errors,
                          cards=d.cards, gaps=d.gaps, facts=d.facts, record=self.record)  # a decided record: replayable
        return fields


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
        policy = AddressPolicy.from_settings(settings.allow_http_fhir, settings.fhir_server_allowlist)
        self.gateway = gateway or FhirGateway(
            call_timeout=settings.fetch_call_timeout_seconds,
            retries=settings.fetch_retries,
            page_limit=settings.fetch_page_limit,
            max_page_bytes=settings.fetch_max_page_bytes,
            max_call_bytes=settings.fetch_max_call_bytes,
            address_policy=policy,
        )
        self.completion = PrefetchCompletion(catalog, self.gateway, policy)
        self.clock = clock or (lambda: datetime.now(UTC))

    def handle(self, service_id: str, body: Any) -> CallOutcome:
        """One hook call, step by step. A failing step ends the call: the outcome keeps its error (raised by
        ``outcome.response()``) and what the steps before it found, for the audit."""
        deadline = Deadline.start(self.settings.fetch_deadline_seconds)  # the call's one deadline, from its start
        call = CallOutcome(identify(body), self.knowledge.version)  # also for a call that parse refuses
        try:
            service, req = self.parse(service_id, body)
            call.evaluated_at = now = self.clock()
            call.prefetch = self.completion.complete(service, req, now, deadline)
            call.prefetch.require()
            call.record = self.build_record(req, call.prefetch, now)
            call.decision = decide(call.record, self.knowledge, req.hook, req.hook_instance, now)
        except Exception as exc:  # handed to the HTTP layer with the outcome (which raises it)
            call.error = exc
        return call

    def parse(self, service_id: str, body: Any) -> tuple[ServiceDefinition, HookRequest]:
        """The service called and the validated request (InvalidRequest and friends: 4xx)."""
        service = self.catalog.get(service_id)
        if service is None:
            raise UnknownService(f"no CDS service with id {service_id!r}")
        return service, parse_hook_request(body, service)

    def build_record(self, req: HookRequest, prefetch: PrefetchResult, now: datetime) -> PatientRecord:
        """The patient record from the completed prefetch and the call's draft orders."""
        record = RecordBuilder(self.knowledge, now).build(
            req.patient_id,
            prefetch.data,
            draft_orders=req.context.get("draftOrders"),
            selections=req.context.get("selections") or (),
            extra_medications=prefetch.medications,
        )
        if self.settings.strict_validation:
            strict_check(prefetch.data, record)
        return record


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
                why = "; ".join(str(exc).splitlines()[:3])
                record.note_gap("strict-validation", f"{label} in {key} is not strictly valid R4: {why}", key)
