"""Lean, tolerant pydantic models of only the FHIR R4 elements the rules read.

Full fhir.resources models cost ~25x json.loads per request; these cost ~2x. They also read what
real EHRs send that strict R4 would reject: a single object where R4 wants a list, unknown
elements, codes with stray whitespace. An optional element that cannot be read is dropped (and
noted through the validation context) instead of dropping the whole resource.
"""
from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, WrapValidator

T = TypeVar("T")


def _strip(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


def _listify(v: Any) -> Any:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _lenient(v: Any, handler: Any, info: Any) -> Any:
    """Optional element: if it cannot be read, drop it and note where."""
    try:
        return handler(v)
    except ValidationError:
        ctx = info.context
        if isinstance(ctx, dict) and "dropped" in ctx:
            ctx["dropped"].append(info.field_name or "?")
        return None


def _lenient_list(v: Any, handler: Any, info: Any) -> Any:
    items = _listify(v)
    out = []
    for item in items:
        try:
            out.extend(handler([item]))
        except ValidationError:
            ctx = info.context
            if isinstance(ctx, dict) and "dropped" in ctx:
                ctx["dropped"].append(f"{info.field_name or '?'}[]")
    return out


Code = Annotated[str, BeforeValidator(_strip)]
Opt = Annotated[T | None, WrapValidator(_lenient)]
Many = Annotated[list[T], WrapValidator(_lenient_list)]


class Lean(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)


class Coding(Lean):
    system: Opt[Code] = None
    code: Opt[Code] = None
    display: Opt[str] = None


class CodeableConcept(Lean):
    coding: Many[Coding] = []
    text: Opt[str] = None

    def codes(self) -> list[tuple[str, str]]:
        return [(c.system or "", c.code) for c in self.coding if c.code]

    def label(self) -> str:
        if self.text:
            return self.text
        for c in self.coding:
            if c.display:
                return c.display
        return next((c.code for c in self.coding if c.code), "")


class Quantity(Lean):
    value: Opt[float] = None
    comparator: Opt[Code] = None
    unit: Opt[str] = None
    system: Opt[Code] = None
    code: Opt[Code] = None


class Reference(Lean):
    reference: Opt[Code] = None
    display: Opt[str] = None


class Period(Lean):
    start: Opt[Code] = None
    end: Opt[Code] = None


class Meta(Lean):
    versionId: Opt[Code] = None
    lastUpdated: Opt[Code] = None


class ReferenceRange(Lean):
    low: Opt[Quantity] = None
    high: Opt[Quantity] = None
    text: Opt[str] = None


class Observation(Lean):
    resourceType: Literal["Observation"]
    id: Opt[Code] = None
    meta: Opt[Meta] = None
    status: Code
    code: CodeableConcept
    subject: Opt[Reference] = None
    effectiveDateTime: Opt[Code] = None
    effectiveInstant: Opt[Code] = None
    effectivePeriod: Opt[Period] = None
    issued: Opt[Code] = None
    valueQuantity: Opt[Quantity] = None
    interpretation: Many[CodeableConcept] = []
    referenceRange: Many[ReferenceRange] = []


class DoseAndRate(Lean):
    doseQuantity: Opt[Quantity] = None


class Timing(Lean):
    code: Opt[CodeableConcept] = None


class Dosage(Lean):
    text: Opt[str] = None
    route: Opt[CodeableConcept] = None
    timing: Opt[Timing] = None
    doseAndRate: Many[DoseAndRate] = []


class MedicationIngredient(Lean):
    itemCodeableConcept: Opt[CodeableConcept] = None


class Medication(Lean):
    resourceType: Literal["Medication"]
    id: Opt[Code] = None
    meta: Opt[Meta] = None
    code: Opt[CodeableConcept] = None
    form: Opt[CodeableConcept] = None
    ingredient: Many[MedicationIngredient] = []


class MedicationRequest(Lean):
    resourceType: Literal["MedicationRequest"]
    id: Opt[Code] = None
    meta: Opt[Meta] = None
    status: Code
    intent: Opt[Code] = None
    medicationCodeableConcept: Opt[CodeableConcept] = None
    medicationReference: Opt[Reference] = None
    subject: Opt[Reference] = None
    authoredOn: Opt[Code] = None
    dosageInstruction: Many[Dosage] = []
    contained: Many[dict] = []


class MedicationStatement(Lean):
    resourceType: Literal["MedicationStatement"]
    id: Opt[Code] = None
    meta: Opt[Meta] = None
    status: Code
    medicationCodeableConcept: Opt[CodeableConcept] = None
    medicationReference: Opt[Reference] = None
    subject: Opt[Reference] = None
    effectiveDateTime: Opt[Code] = None
    effectivePeriod: Opt[Period] = None
    dateAsserted: Opt[Code] = None
    dosage: Many[Dosage] = []
    contained: Many[dict] = []


class Condition(Lean):
    resourceType: Literal["Condition"]
    id: Opt[Code] = None
    meta: Opt[Meta] = None
    clinicalStatus: Opt[CodeableConcept] = None
    verificationStatus: Opt[CodeableConcept] = None
    code: CodeableConcept
    subject: Opt[Reference] = None
    onsetDateTime: Opt[Code] = None
    recordedDate: Opt[Code] = None


class Patient(Lean):
    resourceType: Literal["Patient"]
    id: Opt[Code] = None
    meta: Opt[Meta] = None
    birthDate: Opt[Code] = None
    gender: Opt[Code] = None


class ServiceRequest(Lean):
    resourceType: Literal["ServiceRequest"]
    id: Opt[Code] = None
    status: Opt[Code] = None
    intent: Opt[Code] = None
    code: Opt[CodeableConcept] = None
    subject: Opt[Reference] = None


MODELS: dict[str, type[Lean]] = {
    m.__name__: m
    for m in (Observation, Medication, MedicationRequest, MedicationStatement, Condition, Patient, ServiceRequest)
}


def parse_resource(data: Any) -> tuple[Lean | None, list[str], str | None]:
    """Parse one resource dict. Returns (model or None, dropped element names, error text)."""
    if not isinstance(data, dict):
        return None, [], f"entry is a {type(data).__name__}, not a resource object"
    rtype = data.get("resourceType")
    model = MODELS.get(rtype) if isinstance(rtype, str) else None
    if model is None:
        return None, [], f"resourceType {rtype!r} is not read by this service"
    ctx: dict[str, list[str]] = {"dropped": []}
    try:
        return model.model_validate(data, context=ctx), ctx["dropped"], None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return None, ctx["dropped"], f"{rtype} cannot be read: {where or 'resource'}: {first.get('msg')}"
