"""Scenario fixtures: list them, read their bundles, turn them into prefetch and ready hook requests.

The scenario patients live in ``fixtures/`` at the repository root, shipped inside the package by a
wheel (``CDS_FIXTURES_DIR`` overrides; see ``cds_service.bundled``):
``scenarios.yaml`` (the index with each scenario's expected cards), ``scenarios/<id>.json`` (FHIR R4
transaction Bundles) and ``drafts/<id>.json`` (draft orders for the order hooks).

``search`` answers a prefetch query over a bundle's resources the way a FHIR server would (by resource
type and patient, honouring code, date and status filters), so prefetch can be built without a server.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .definitions import HOOKS, ORDER_HOOKS, ServiceCatalog, ServiceDefinition
from .prefetch.templates import render
from .record.dates import parse_fhir_date, parse_fhir_datetime
from .yaml_files import load_yaml

SERVICE_FOR_HOOK = {
    "patient-view": "magnesium-patient-view",
    "order-select": "magnesium-order-select",
    "order-sign": "magnesium-order-sign",
}
FHIR_SERVER_PLACEHOLDER = "http://127.0.0.1:8089/fhir"
EXAMPLE_AUTHORIZATION = {
    "access_token": "example-access-token-not-a-secret",
    "token_type": "Bearer",
    "expires_in": 300,
    "scope": "patient/Patient.read patient/Observation.read patient/MedicationRequest.read "
             "patient/MedicationStatement.read patient/Condition.read patient/Medication.read",
    "subject": "cds-magnesium-service",
}
EXAMPLE_USER = "Practitioner/example-clinician"
_REQUEST_NAMESPACE = uuid.UUID("0b7f3c52-8d1e-4a7c-9a57-3c1f5e2d9b40")


class FixtureError(ValueError):
    """A fixture file that is missing or malformed, or a query the search emulation does not support."""


@dataclass(frozen=True)
class Scenario:
    id: str
    description: str
    patient_id: str
    bundle_path: Path
    drafts_path: Path | None
    selections: tuple[str, ...] | None  # None = every draft order
    expected: dict[str, frozenset[str]] = field(default_factory=dict)


def fixtures_dir(directory: str | Path | None = None) -> Path:
    if directory:
        return Path(directory)
    env = os.environ.get("CDS_FIXTURES_DIR")
    if env:
        return Path(env)
    from .bundled import data_dir

    return data_dir("fixtures")  # the checkout's fixtures/, else the copy shipped in the package


def list_scenarios(directory: str | Path | None = None) -> list[Scenario]:
    """Every scenario in ``scenarios.yaml``, in file order."""
    base = fixtures_dir(directory)
    index = base / "scenarios.yaml"
    try:
        raw = load_yaml(index.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise FixtureError(f"no scenario index at {index}") from None
    out: list[Scenario] = []
    for item in raw.get("scenarios") or []:
        sid = item["id"]
        expected: dict[str, frozenset[str]] = {hook: frozenset(item.get("expected", {}).get(hook) or ()) for hook in HOOKS}
        drafts = item.get("drafts")
        sel = item.get("selections")
        out.append(Scenario(
            id=sid,
            description=" ".join(str(item.get("description", "")).split()),
            patient_id=item.get("patient", sid),
            bundle_path=base / "scenarios" / f"{sid}.json",
            drafts_path=(base / drafts) if drafts else None,
            selections=tuple(sel) if sel is not None else None,
            expected=expected,
        ))
    return out


def get_scenario(scenario_id: str, directory: str | Path | None = None) -> Scenario:
    for s in list_scenarios(directory):
        if s.id == scenario_id:
            return s
    raise FixtureError(f"no scenario {scenario_id!r}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FixtureError(f"missing fixture file {path}") from None
    except ValueError as exc:
        raise FixtureError(f"{path} is not JSON: {exc}") from None


def read_bundle(scenario: Scenario | str, directory: str | Path | None = None) -> dict[str, Any]:
    """The scenario's transaction Bundle, as stored."""
    s = scenario if isinstance(scenario, Scenario) else get_scenario(scenario, directory)
    return _read_json(s.bundle_path)


def read_drafts(scenario: Scenario | str, directory: str | Path | None = None) -> dict[str, Any]:
    """The draft orders Bundle (an empty collection Bundle when the scenario has none)."""
    s = scenario if isinstance(scenario, Scenario) else get_scenario(scenario, directory)
    if s.drafts_path is None:
        return {"resourceType": "Bundle", "type": "collection", "entry": []}
    return _read_json(s.drafts_path)


def selections_for(scenario: Scenario, drafts: dict[str, Any]) -> list[str]:
    return list(scenario.selections) if scenario.selections is not None else every_draft(drafts)


def every_draft(drafts: dict[str, Any]) -> list[str]:
    """References to every draft order (order-select's default selection)."""
    return [f"{r['resourceType']}/{r['id']}" for r in (e.get("resource") for e in drafts.get("entry") or []) if r]


# ---------------------------------------------------------------------- transaction -> stored resources
def stored_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources a server would hold after the transaction: ids assigned, urn:uuid references resolved."""
    resolved: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for entry in bundle.get("entry") or []:
        res = entry.get("resource")
        if not isinstance(res, dict):
            continue
        res = json.loads(json.dumps(res))
        rtype = res.get("resourceType")
        request = entry.get("request") or {}
        url = str(request.get("url", ""))
        if request.get("method") == "PUT" and "/" in url:
            res["id"] = url.split("?")[0].split("/")[1]
        full = entry.get("fullUrl")
        if not res.get("id") and isinstance(full, str) and full.startswith("urn:uuid:"):
            res["id"] = full[len("urn:uuid:"):]
        if not res.get("id"):
            res["id"] = f"{str(rtype).lower()}-{len(out) + 1}"
        if isinstance(full, str):
            resolved[full] = f"{rtype}/{res['id']}"
        out.append(res)
    if resolved:
        out = [_rewrite_references(r, resolved) for r in out]
    return out


def _rewrite_references(value: Any, resolved: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: (resolved.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite_references(v, resolved))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_references(v, resolved) for v in value]
    return value


# ---------------------------------------------------------------------- search emulation
_PATIENT_PATH = {  # where each type points at its patient
    "Observation": "subject", "MedicationRequest": "subject", "MedicationStatement": "subject",
    "Condition": "subject", "ServiceRequest": "subject", "Encounter": "subject", "AllergyIntolerance": "patient",
    "Immunization": "patient", "Procedure": "subject", "DiagnosticReport": "subject",
}


def _codings(concept: Any) -> list[dict[str, Any]]:
    return [c for c in (concept or {}).get("coding") or [] if isinstance(c, dict)] if isinstance(concept, dict) else []


def _match_token(concept: Any, wanted: list[str]) -> bool:
    for w in wanted:
        system, sep, code = w.rpartition("|")
        for c in _codings(concept):
            if c.get("code") == (code if sep else w) and (not sep or not system or c.get("system") == system):
                return True
    return False


def _effective(res: dict[str, Any]) -> datetime | None:
    raw = res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start") or res.get("effectiveInstant") \
        or res.get("issued")
    return parse_fhir_datetime(raw) if raw else None


def _sort_key(res: dict[str, Any]) -> str:
    when = _effective(res)
    return when.isoformat() if when else ""


def _match_date(res: dict[str, Any], expr: str) -> bool:
    prefix, value = (expr[:2], expr[2:]) if expr[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", expr)
    when = _effective(res)
    if when is None:
        return False
    bound = parse_fhir_date(value) if len(value) <= 10 else None
    got = when.date() if bound is not None else when
    if bound is None:
        bound = parse_fhir_datetime(value)
        if bound is None:
            raise FixtureError(f"cannot read date {value!r}")
    return {"ge": got >= bound, "gt": got > bound, "le": got <= bound, "lt": got < bound, "eq": got == bound}[prefix]


_SUPPORTED = {"patient", "subject", "code", "date", "status", "clinical-status", "verification-status", "_id", "_sort", "_count"}


def _filter(res: dict[str, Any], name: str, value: str) -> bool:
    values = [v for v in value.split(",") if v]
    rtype = res.get("resourceType")
    if name in ("patient", "subject"):
        pid = value.split("/")[-1]
        ref = (res.get(_PATIENT_PATH.get(str(rtype), "subject")) or {}).get("reference", "")
        return ref == f"Patient/{pid}" or ref.endswith(f"/Patient/{pid}")
    if name == "code":
        if rtype == "Observation":
            return _match_token(res.get("code"), values)
        if rtype in ("MedicationRequest", "MedicationStatement"):
            return _match_token(res.get("medicationCodeableConcept"), values)
        return _match_token(res.get("code"), values)
    if name == "date":
        return _match_date(res, value)
    if name == "status":
        return res.get("status") in values
    if name == "clinical-status":
        return _match_token(res.get("clinicalStatus"), values)
    if name == "verification-status":
        return _match_token(res.get("verificationStatus"), values)
    if name == "_id":
        return res.get("id") in values
    raise FixtureError(f"search parameter {name!r} is not supported by the fixture search emulation")


def search(resources: Iterable[dict[str, Any]], query: str) -> dict[str, Any] | None:
    """Answer a relative FHIR query (``Type/id`` read, or ``Type?params`` search) over stored resources.

    A read returns the resource (None when absent, as a 404 would); a search returns a searchset Bundle.
    Supported: patient/subject, code (system|code lists), date (ge/gt/le/lt/eq), status, clinical-status,
    verification-status, _id, _sort (date, -date), _count. Anything else raises FixtureError.
    """
    parts = urlsplit(query)
    path = parts.path.strip("/")
    resources = list(resources)
    if "/" in path:
        rtype, rid = path.split("/", 1)
        return next((r for r in resources if r.get("resourceType") == rtype and r.get("id") == rid), None)
    rtype = path
    params = parse_qsl(parts.query, keep_blank_values=True)
    sort = count = None
    matches = [r for r in resources if r.get("resourceType") == rtype]
    unknown = [name for name, _ in params if name not in _SUPPORTED]
    if unknown:
        raise FixtureError(f"search parameter(s) {unknown} not supported by the fixture search emulation")
    for name, value in params:
        if name == "_sort":
            sort = value
            continue
        if name == "_count":
            count = int(value)
            continue
        matches = [r for r in matches if _filter(r, name, value)]
    if sort:
        key = sort.lstrip("-")
        if key != "date":
            raise FixtureError(f"_sort={sort} is not supported")
        matches.sort(key=lambda r: _sort_key(r), reverse=sort.startswith("-"))
    total = len(matches)
    if count is not None:
        matches = matches[:count]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "entry": [{"fullUrl": f"{FHIR_SERVER_PLACEHOLDER}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                  for r in matches],
    }


def _include_medications(result: dict[str, Any], resources: list[dict[str, Any]]) -> None:
    """Add referenced Medication resources as ``include`` entries (a server's ``_include=...:medication``)."""
    have = {e["resource"].get("id") for e in result.get("entry", []) if e["resource"].get("resourceType") == "Medication"}
    for entry in list(result.get("entry", [])):
        ref = ((entry["resource"].get("medicationReference") or {}).get("reference") or "")
        if ref.startswith("Medication/"):
            mid = ref.split("/", 1)[1]
            med = next((r for r in resources if r.get("resourceType") == "Medication" and r.get("id") == mid), None)
            if med is not None and mid not in have:
                have.add(mid)
                result["entry"].append({"fullUrl": f"{FHIR_SERVER_PLACEHOLDER}/Medication/{mid}", "resource": med,
                                        "search": {"mode": "include"}})


def prefetch_for(service: ServiceDefinition, catalog: ServiceCatalog, resources: list[dict[str, Any]],
                 context: dict[str, Any], now: datetime, *, honour_filters: bool = True,
                 include_medications: bool = True) -> dict[str, Any]:
    """Prefetch values for ``service`` computed from ``resources`` as a FHIR server would answer each template.

    honour_filters=False answers every search with all of the patient's resources of that type (an EHR that
    ignores the status/date/code filters), to check that the record builder itself drops what must not count.
    include_medications adds the Medication resources that MedicationRequest/Statement entries reference.
    """
    out: dict[str, Any] = {}
    for key, p in service.prefetch.items():
        query = render(catalog.expand_knowledge_tokens(service, p.template, now), context)
        if not honour_filters and "?" in query:
            rtype = query.split("?", 1)[0]
            query = f"{rtype}?patient={context['patientId']}"
        value = search(resources, query)
        if value is None:
            continue
        if include_medications and value.get("resourceType") == "Bundle":
            _include_medications(value, resources)
        out[key] = value
    return out


# ---------------------------------------------------------------------- hook requests
def hook_instance_for(scenario_id: str, hook: str, variant: str) -> str:
    """Stable hookInstance per scenario/hook/variant (card uuids derive from it, so goldens stay stable)."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, f"{scenario_id}|{hook}|{variant}"))


def hook_context(patient_id: str, hook: str, drafts: dict[str, Any] | None = None,
                 selections: list[str] | None = None) -> dict[str, Any]:
    """The request context for ``hook``: the example user and the patient; on the order hooks the draft orders, and on
    order-select the selected ones (default: every draft)."""
    context: dict[str, Any] = {"userId": EXAMPLE_USER, "patientId": patient_id}
    if hook in ORDER_HOOKS and drafts is not None:
        context["draftOrders"] = drafts
        if hook == "order-select":
            context["selections"] = selections if selections is not None else every_draft(drafts)
    return context


def redrafted(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A patient's active MedicationRequests re-drafted: the draft orders of an EHR pending the same orders again."""
    entries = [{"resource": dict(r, status="draft")} for r in resources
               if r["resourceType"] == "MedicationRequest" and r.get("status") == "active"]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def day_after_last_lab(resources: list[dict[str, Any]], loinc_codes: Iterable[str]) -> datetime | None:
    """The day after the patient's last Observation with one of ``loinc_codes`` (a `now` that keeps their labs inside
    the lookback), or None when they have none."""
    codes = set(loinc_codes)
    dates = [d for r in resources if r.get("resourceType") == "Observation"
             and any(c.get("code") in codes for c in (r.get("code") or {}).get("coding", []))
             if (d := parse_fhir_datetime(r.get("effectiveDateTime"))) is not None]
    return max(dates) + timedelta(days=1) if dates else None


def chart_request(resources: list[dict[str, Any]], hook: str, catalog: ServiceCatalog, now: datetime, hook_instance: str,
                  *, honour_filters: bool = True) -> dict[str, Any]:
    """A CDS Hooks request with full prefetch for a patient given as stored resources (a generated patient, not a
    scenario): their active MedicationRequests re-drafted as the order hooks' draft orders, all selected."""
    patient_id = next(r for r in resources if r["resourceType"] == "Patient")["id"]
    service = catalog.get(SERVICE_FOR_HOOK[hook])
    if service is None:
        raise FixtureError(f"no service {SERVICE_FOR_HOOK[hook]} in the catalog")
    context = hook_context(patient_id, hook, redrafted(resources) if hook in ORDER_HOOKS else None)
    return {"hookInstance": hook_instance, "hook": hook, "context": context,
            "prefetch": prefetch_for(service, catalog, resources, context, now, honour_filters=honour_filters)}


def build_request(scenario: Scenario | str, hook: str, catalog: ServiceCatalog, now: datetime, *,
                  with_prefetch: bool = True, honour_filters: bool = True,
                  fhir_server: str = FHIR_SERVER_PLACEHOLDER, directory: str | Path | None = None) -> dict[str, Any]:
    """A CDS Hooks 2.0 request for ``scenario`` on ``hook``: full prefetch, or none (fhirServer + fhirAuthorization)."""
    s = scenario if isinstance(scenario, Scenario) else get_scenario(scenario, directory)
    if hook not in SERVICE_FOR_HOOK:
        raise FixtureError(f"unsupported hook {hook!r}")
    service = catalog.get(SERVICE_FOR_HOOK[hook])
    if service is None:
        raise FixtureError(f"no service {SERVICE_FOR_HOOK[hook]} in the catalog")
    drafts = read_drafts(s) if hook in ORDER_HOOKS else None
    context = hook_context(s.patient_id, hook, drafts, selections_for(s, drafts) if drafts is not None else None)
    variant = "prefetch" if with_prefetch else "no-prefetch"
    body: dict[str, Any] = {"hookInstance": hook_instance_for(s.id, hook, variant), "hook": hook}
    if with_prefetch:
        resources = stored_resources(read_bundle(s))
        body["context"] = context
        body["prefetch"] = prefetch_for(service, catalog, resources, context, now, honour_filters=honour_filters)
    else:
        body["fhirServer"] = fhir_server
        body["fhirAuthorization"] = dict(EXAMPLE_AUTHORIZATION)
        body["context"] = context
    return body


def request_files(catalog: ServiceCatalog, now: datetime, directory: str | Path | None = None) -> dict[str, str]:
    """File name -> JSON text of every ready request (``<scenario>.<hook>.prefetch.json`` / ``.no-prefetch.json``)."""
    out: dict[str, str] = {}
    for s in list_scenarios(directory):
        for hook in HOOKS:
            for with_prefetch in (True, False):
                name = f"{s.id}.{hook}.{'prefetch' if with_prefetch else 'no-prefetch'}.json"
                body = build_request(s, hook, catalog, now, with_prefetch=with_prefetch, directory=directory)
                out[name] = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    return out


def write_requests(out_dir: str | Path, catalog: ServiceCatalog, now: datetime,
                   directory: str | Path | None = None) -> list[Path]:
    """(Re)write every ready request into ``out_dir``; stale ``*.json`` files there are removed."""
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    files = request_files(catalog, now, directory)
    for stale in target.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in sorted(files.items()):
        path = target / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
