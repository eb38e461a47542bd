"""CDS service definitions: one YAML file per service in hooks/, validated at start-up.

Discovery is generated from these. A definition may name a prefetch block of ``hooks/prefetch.yaml``
(``prefetch: standard``) instead of writing one: the services share one block. Prefetch templates may use
the CDS Hooks 2.0 tokens and some of ours, expanded by the service itself from the knowledge (never sent to
an EHR unexpanded): ``{{knowledge.observationCodes}}`` (the LOINC value sets the rules read),
``{{knowledge.lookbackStart}}`` (today minus the lookback window, as a date) and the status filters
``{{knowledge.medicationRequestStatuses}}``, ``{{knowledge.medicationStatementStatuses}}`` and
``{{knowledge.conditionClinicalStatuses}}`` (the statuses the knowledge's policies say are read).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigurationError
from .knowledge import LOINC, Knowledge
from .yaml_files import YAMLError, load_yaml

Hook = Literal["patient-view", "order-select", "order-sign"]
HOOKS: tuple[Hook, ...] = get_args(Hook)  # the CDS hooks this service answers
REQUIRED_CONTEXT: dict[Hook, tuple[str, ...]] = {
    "patient-view": ("userId", "patientId"),
    "order-select": ("userId", "patientId", "selections", "draftOrders"),
    "order-sign": ("userId", "patientId", "draftOrders"),
}
ORDER_HOOKS: tuple[Hook, ...] = tuple(h for h in HOOKS if "draftOrders" in REQUIRED_CONTEXT[h])  # drafts in context
TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
ALLOWED_TOKENS = {
    "context.patientId",
    "context.encounterId",
    "context.userId",
    "userPractitionerId",
    "userPractitionerRoleId",
    "userPatientId",
    "userRelatedPersonId",
    "knowledge.observationCodes",
    "knowledge.lookbackStart",
    "knowledge.medicationRequestStatuses",
    "knowledge.medicationStatementStatuses",
    "knowledge.conditionClinicalStatuses",
}
PREFETCH_SETS = "prefetch.yaml"  # in the definitions directory: named prefetch blocks, not a service


class PrefetchDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    template: str
    required: bool = False
    resource_type: str = ""  # the type the template asks for (first path segment)
    purpose: str = ""

    @field_validator("template")
    @classmethod
    def _tokens(cls, v: str) -> str:
        for token in TOKEN.findall(v):
            if token not in ALLOWED_TOKENS:
                raise ValueError(f"unknown prefetch token {{{{{token}}}}}")
        if v.startswith("/") or "://" in v:
            raise ValueError("prefetch templates are relative FHIR queries (no leading slash, no host)")
        return v


class ServiceDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[A-Za-z0-9\-.]+$")
    hook: Hook
    title: str
    description: str
    usageRequirements: str = ""
    prefetch: dict[str, PrefetchDef]
    analytes: list[str] = Field(default_factory=list)  # for {{knowledge.observationCodes}}; empty = all

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("prefetch"), dict):
            pf = {}
            for key, value in data["prefetch"].items():
                pf[key] = {"template": value} if isinstance(value, str) else value
            data = {**data, "prefetch": pf}
        return data

    @model_validator(mode="after")
    def _types(self) -> ServiceDefinition:
        fixed = {}
        for key, p in self.prefetch.items():
            rtype = re.split(r"[/?]", p.template, maxsplit=1)[0]
            if not rtype.isalpha() or not rtype[0].isupper():
                raise ValueError(f"prefetch {key}: template must start with a resource type")
            if p.resource_type and p.resource_type != rtype:
                raise ValueError(f"prefetch {key}: resource_type {p.resource_type} does not match template {rtype}")
            fixed[key] = p.model_copy(update={"resource_type": rtype})
        object.__setattr__(self, "prefetch", fixed)
        return self

    def required_keys(self) -> list[str]:
        return [k for k, p in self.prefetch.items() if p.required]


class ServiceCatalog:
    """The loaded definitions, with template expansion bound to the knowledge."""

    def __init__(self, services: list[ServiceDefinition], knowledge: Knowledge):
        self.services = {s.id: s for s in services}
        self.knowledge = knowledge
        for s in services:
            unknown = [a for a in s.analytes if a not in knowledge.model.analytes]
            if unknown:
                raise ConfigurationError(f"service {s.id}: unknown analytes {unknown}")

    def get(self, service_id: str) -> ServiceDefinition | None:
        return self.services.get(service_id)

    def expand_knowledge_tokens(self, service: ServiceDefinition, template: str, now: datetime) -> str:
        if "knowledge." not in template:
            return template
        k = self.knowledge
        codes = ",".join(f"{LOINC}|{c}" for c in k.observation_codes(service.analytes or None))
        start = (now - timedelta(days=int(k.policy("lookback_days")))).date().isoformat()
        not_fetched = set(k.policy("medication_request_statuses_not_fetched"))
        values = {"knowledge.observationCodes": codes, "knowledge.lookbackStart": start,
                  "knowledge.medicationRequestStatuses": ",".join(s for s in k.policy("medication_request_states")
                                                                  if s not in not_fetched),
                  "knowledge.medicationStatementStatuses": ",".join(k.policy("medication_statement_states")),
                  "knowledge.conditionClinicalStatuses": ",".join(k.policy("condition_clinical_statuses"))}
        return TOKEN.sub(lambda m: values.get(m.group(1), m.group(0)), template)

    def discovery(self, now: datetime) -> dict:
        out = []
        for s in self.services.values():
            entry = {
                "hook": s.hook,
                "title": s.title,
                "description": s.description,
                "id": s.id,
                "prefetch": {k: self.expand_knowledge_tokens(s, p.template, now) for k, p in s.prefetch.items()},
            }
            if s.usageRequirements:
                entry["usageRequirements"] = s.usageRequirements
            out.append(entry)
        return {"services": out}


def definition_files(directory: str | Path) -> list[Path]:
    """The service definition files of ``directory`` (every ``*.yaml``/``*.yml`` but the shared prefetch sets)."""
    path = Path(directory)
    return [f for f in sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if f.name != PREFETCH_SETS]


def _prefetch_sets(path: Path) -> dict[str, object]:
    """The named prefetch blocks of ``path`` (empty when the directory has no shared prefetch file)."""
    if not path.is_file():
        return {}
    try:
        sets = load_yaml(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(sets, dict) or not all(isinstance(v, dict) for v in sets.values()):
        raise ConfigurationError(f"{path}: must map each prefetch set's name to its prefetch block")
    return sets


def load_definitions(directory: str | Path, knowledge: Knowledge) -> ServiceCatalog:
    """Load every service definition in ``directory`` (a ``prefetch: <name>`` takes that set of ``prefetch.yaml``);
    any problem stops start-up with a clear message."""
    path = Path(directory)
    files = definition_files(path)
    if not files:
        raise ConfigurationError(f"no CDS service definitions (*.yaml) in {path} (CDS_HOOKS_DIR sets the directory)")
    shared = path / PREFETCH_SETS
    sets = _prefetch_sets(shared)
    services: list[ServiceDefinition] = []
    for f in files:
        where = str(f)
        try:
            raw = load_yaml(f.read_text(encoding="utf-8"))
            if isinstance(raw, dict) and isinstance(raw.get("prefetch"), str):
                name = raw["prefetch"]
                if name not in sets:
                    raise ConfigurationError(f"{f}: prefetch {name!r} is not a prefetch set of {shared}")
                where = f"{f} (prefetch {name!r} of {shared})"
                raw = {**raw, "prefetch": sets[name]}
            services.append(ServiceDefinition.model_validate(raw))
        except YAMLError as exc:
            raise ConfigurationError(f"{f}: not valid YAML: {exc}") from None
        except ValidationError as exc:
            raise ConfigurationError(f"{where}: invalid service definition:\n{exc}") from None
    ids = [s.id for s in services]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ConfigurationError(f"duplicate service ids in {path}: {sorted(dupes)}")
    return ServiceCatalog(services, knowledge)
