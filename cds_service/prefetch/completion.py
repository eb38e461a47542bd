"""Prefetch completion: the prefetch the EHR sent where it is usable, the rest fetched from ``fhirServer``
under the call's deadline, then the Medications that orders reference but nobody sent.

The policy: a prefetched value is used when it is what its template asks for (``prefetch_problem``);
otherwise the template is rendered and fetched, if the fhirServer may be read (``AddressPolicy``). A key
that could be neither prefetched nor fetched is unavailable; when the service requires it,
``PrefetchResult.require`` raises ``PrefetchUnavailable`` (HTTP 412).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..definitions import ServiceCatalog, ServiceDefinition
from ..errors import PrefetchUnavailable
from ..protocol.request import HookRequest
from ..record.builder import ResolvedData, iter_resources
from ..record.medications import medication_id
from .deadline import EXTRA_FETCH_FLOOR, KEY_FETCH_FLOOR, Deadline
from .gateway import AddressPolicy, ByteBudget, FhirGateway
from .templates import TemplateError, render

log = logging.getLogger(__name__)
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,256}")  # FHIR R4 id characters (length lenient: some EHRs exceed 64)
MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationStatement", "Medication"})
MAX_REFERENCED_MEDICATIONS = 20  # Medications fetched per call for references nobody sent


@dataclass
class PrefetchResult:
    """The completed prefetch of one call."""

    data: ResolvedData  # per key the JSON obtained, why a key is unavailable or partial: what the record is built from
    status: dict[str, str] = field(default_factory=dict)  # key -> prefetched | fetched (...) | unavailable
    fetch_ms: dict[str, float] = field(default_factory=dict)  # key -> time its fetch took
    medications: list[dict[str, Any]] = field(default_factory=list)  # referenced Medications fetched
    missing_required: list[str] = field(default_factory=list)  # required keys that are unavailable

    def require(self) -> None:
        """Raise PrefetchUnavailable when a key the service requires could be neither prefetched nor fetched."""
        if self.missing_required:
            raise PrefetchUnavailable(
                "data the service needs could be neither prefetched nor fetched",
                details=[f"{k}: {self.data.unavailable[k]}" for k in self.missing_required],
                expression=[f"prefetch.{k}" for k in self.missing_required],
            )


class PrefetchCompletion:
    def __init__(self, catalog: ServiceCatalog, gateway: FhirGateway, policy: AddressPolicy):
        self.catalog = catalog
        self.gateway = gateway
        self.policy = policy

    def complete(self, service: ServiceDefinition, req: HookRequest, now: datetime, deadline: Deadline) -> PrefetchResult:
        """Every prefetch key of ``service`` prefetched, fetched or unavailable; then (when no required key is
        missing) the referenced Medications, under the same deadline and byte budget."""
        budget = self.gateway.call_budget()  # bytes for this call, shared by its fetches
        result = self._keys(service, req, now, deadline, budget)
        result.missing_required = [k for k in service.required_keys() if k in result.data.unavailable]
        if not result.missing_required:
            result.medications = self._referenced_medications(service, result.data.values, req, deadline, budget)
        return result

    def _keys(self, service: ServiceDefinition, req: HookRequest, now: datetime, deadline: Deadline,
              budget: ByteBudget) -> PrefetchResult:
        data = ResolvedData(values={}, key_types={k: p.resource_type for k, p in service.prefetch.items()})
        result = PrefetchResult(data)
        values, unavailable, notes, status = data.values, data.unavailable, data.notes, result.status
        to_fetch: dict[str, str] = {}
        for key, p in service.prefetch.items():
            given = req.prefetch.get(key)
            problem = prefetch_problem(given, p.template, p.resource_type)
            if problem is None:
                values[key] = given
                status[key] = "prefetched"
                continue
            if given is not None and problem != "absent":
                notes[key] = problem
            try:
                template = self.catalog.expand_knowledge_tokens(service, p.template, now)
                to_fetch[key] = render(template, req.context)
            except TemplateError as exc:
                unavailable[key] = str(exc)
                status[key] = "unavailable"
        if not to_fetch:
            return result
        base = req.fhir_server
        reason = self.policy.server_refusal(base)
        if reason is not None or base is None:
            for key in to_fetch:
                unavailable[key] = (notes.get(key, "not prefetched") + f"; {reason}")
                status[key] = "unavailable"
            return result
        results = self.gateway.fetch_many(base, _token(req), to_fetch, deadline.at_least(KEY_FETCH_FLOOR), budget)
        for key, res in results.items():
            result.fetch_ms[key] = round(res.elapsed_ms, 1)
            if res.ok:
                values[key] = res.data
                invalid = notes.pop(key, None)
                status[key] = "fetched" + (f" (prefetch not usable: {invalid})" if invalid else "")
                if invalid:
                    log.info("prefetch %s not usable (%s); fetched instead", key, invalid)
                if res.truncated:
                    notes[key] = f"only the first {res.pages} page(s) were read ({res.truncated_why})"
            else:
                unavailable[key] = res.error or "could not be read"
                status[key] = "unavailable"
                log.warning("prefetch %s unavailable for hookInstance %s: %s", key, req.hook_instance, res.error)
        return result

    def _referenced_medications(self, service: ServiceDefinition, values: dict[str, Any], req: HookRequest,
                                deadline: Deadline, budget: ByteBudget) -> list[dict[str, Any]]:
        """Medication resources that medication keys or draft orders reference but nobody sent: fetched too."""
        base = req.fhir_server
        if base is None or self.policy.server_refusal(base):
            return []
        medication_keys = [k for k, p in service.prefetch.items() if p.resource_type in MEDICATION_TYPES]
        missing = missing_medication_ids([values.get(k) for k in medication_keys] + [req.context.get("draftOrders")])
        if not missing or not deadline.leaves(EXTRA_FETCH_FLOOR):
            return []
        queries = {f"Medication/{m}": f"Medication/{m}" for m in missing[:MAX_REFERENCED_MEDICATIONS]}
        results = self.gateway.fetch_many(base, _token(req), queries, deadline, budget)
        return [r.data for r in results.values() if r.ok and isinstance(r.data, dict)]


def missing_medication_ids(sources: Iterable[Any]) -> list[str]:
    """Ids of the Medications that the resources in ``sources`` reference but do not contain (sorted);
    a reference whose id is not a FHIR id is logged and left out (never ".", ".." or a query)."""
    have: set[str] = set()
    wanted: set[str] = set()
    for value in sources:
        for res, _ in iter_resources(value):
            if not isinstance(res, dict):
                continue
            if res.get("resourceType") == "Medication" and isinstance(res.get("id"), str):
                have.add(res["id"])
            ref = res.get("medicationReference")
            mid = medication_id(ref.get("reference")) if isinstance(ref, dict) else None
            if mid is None:
                continue
            if FHIR_ID.fullmatch(mid) and mid.strip(".") != "":
                wanted.add(mid)
            else:
                log.warning("medicationReference %r is not a FHIR id: not fetched", mid[:100])
    return sorted(wanted - have)


def prefetch_problem(value: Any, template: str, rtype: str) -> str | None:
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


def _token(req: HookRequest) -> str | None:
    return req.fhir_authorization.access_token if req.fhir_authorization else None
