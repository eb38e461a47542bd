"""Lean, tolerant pydantic models of only the FHIR R4 elements the rules read.

Full fhir.resources models cost ~25x json.loads per request; these cost ~2x. They also read what
real EHRs send that strict R4 would reject: a single object where R4 wants a list, unknown
elements, codes with stray whitespace. An optional element that cannot be read is dropped (and
noted through the validation context) instead of dropping the whole resource.

Three ways in, one behaviour (the tolerant pydantic validation defines it): a prefetched Bundle of clean
Observations is decoded straight from the request bytes into msgspec Structs (typed_observations.ObservationData, read by
api/body.decode_typed); a clean resource dict takes a generated fast path; anything unusual is validated.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple, TypeVar

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


class TimingRepeat(Lean):
    frequency: Opt[float] = None
    period: Opt[float] = None
    periodUnit: Opt[Code] = None


class Timing(Lean):
    code: Opt[CodeableConcept] = None
    repeat: Opt[TimingRepeat] = None


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
    try:  # clean resources (the vast majority) skip pydantic; anything unusual takes the tolerant path
        return _FAST[model](data), [], None
    except Exception:
        pass
    ctx: dict[str, list[str]] = {"dropped": []}
    try:
        return model.model_validate(data, context=ctx), ctx["dropped"], None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return None, ctx["dropped"], f"{rtype} cannot be read: {where or 'resource'}: {first.get('msg')}"


# ---------------------------------------------------------------------------------------------- fast path
# For each model, a generated function that builds the very same instance pydantic would build, but only
# from a resource whose every read element already has its exact JSON type (str, number, object, array).
# Anything else (a single object for a list, a number for a string, a null inside a list, a missing required
# element, ...) raises, and parse_resource falls back to the tolerant pydantic validation above, which
# defines the behaviour. Costs ~1/20 of the validation. tests/bench/test_fast_path_equivalence.py checks
# both paths agree.


class _NotClean(Exception):
    pass


def _not_clean(*_: Any) -> Any:
    raise _NotClean


_set = object.__setattr__


def _instance(cls: type[Lean], values: dict[str, Any], fields_set: set[str]) -> Lean:
    """What BaseModel.model_construct does for these plain (no extra, no private) models."""
    obj = object.__new__(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", fields_set)
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def _field_kind(cls: type[Lean], name: str) -> tuple[str, Any]:
    field = cls.model_fields[name]
    ann = field.annotation
    wraps = [m.func for m in field.metadata if isinstance(m, WrapValidator)]
    befores = [m.func for m in field.metadata if isinstance(m, BeforeValidator)]
    args = [a for a in getattr(ann, "__args__", ()) if a is not type(None)]
    if name == "resourceType":
        return "literal", None
    if _lenient_list in wraps:  # Many[T]
        item = args[0]
        if item is dict:
            return "many_dict", None
        return "many_model", item
    inner = args[0] if (_lenient in wraps and args) else ann
    strip = _strip in befores or any(
        isinstance(m, BeforeValidator) and m.func is _strip for m in getattr(inner, "__metadata__", ()))
    base = getattr(inner, "__origin__", inner)
    if base is str:
        return ("code" if strip else "str"), None
    if base is float:
        return "float", None
    if isinstance(base, type) and issubclass(base, Lean):
        return "model", base
    raise TypeError(f"no fast path for {cls.__name__}.{name}: {ann!r}")


def _compile_fast(cls: type[Lean]) -> None:
    name = cls.__name__
    lines = [f"def fast_{name}(data):", "    if type(data) is not dict: not_clean()", "    get = data.get", "    d = {}"]
    for fname, field in cls.model_fields.items():
        kind, sub = _field_kind(cls, fname)
        req = field.is_required()
        lines.append(f"    v = get({fname!r})")
        none = "not_clean()" if req else (f"d[{fname!r}] = []" if kind.startswith("many") else f"d[{fname!r}] = None")
        if kind == "literal":
            lines.append(f"    if v != {name!r}: not_clean()")
            lines.append(f"    d[{fname!r}] = v")
            continue
        lines.append(f"    if v is None: {none}")
        if kind == "code":
            lines.append(f"    elif type(v) is str: d[{fname!r}] = v.strip()")
        elif kind == "str":
            lines.append(f"    elif type(v) is str: d[{fname!r}] = v")
        elif kind == "float":
            lines.append(f"    elif type(v) is float: d[{fname!r}] = v")
            lines.append(f"    elif type(v) is int: d[{fname!r}] = float(v)")
        elif kind == "model":
            lines.append(f"    elif type(v) is dict: d[{fname!r}] = fast_{sub.__name__}(v)")
        elif kind == "many_model":
            lines.append(f"    elif type(v) is list: d[{fname!r}] = [fast_{sub.__name__}(x) for x in v]")
        elif kind == "many_dict":
            lines.append(f"    elif type(v) is list: d[{fname!r}] = [dict(x) if type(x) is dict else not_clean() for x in v]")
        lines.append("    else: not_clean()")
    lines.append(f"    return instance({name}, d, data.keys() & names_{name})")
    _FAST_NS[f"names_{name}"] = frozenset(cls.model_fields)
    _FAST_NS[name] = cls
    exec(compile("\n".join(lines), f"<lean fast path {name}>", "exec"), _FAST_NS)


_FAST_NS: dict[str, Any] = {"not_clean": _not_clean, "instance": _instance}
_FAST_CLASSES: tuple[type[Lean], ...] = (Coding, CodeableConcept, Quantity, Reference, Period, Meta, ReferenceRange, DoseAndRate,
                                         TimingRepeat, Timing, Dosage, MedicationIngredient, *MODELS.values())
for _cls in _FAST_CLASSES:
    _compile_fast(_cls)
_FAST: dict[type[Lean], Any] = {cls: _FAST_NS[f"fast_{cls.__name__}"] for cls in MODELS.values()}


# ---------------------------------------------------------------------------------------------- Observations
# Observations are most of a record: for a clean one the builder reads these few values straight from the
# JSON, with the very same checks as the Observation model (so an Observation is either read identically or
# sent down the tolerant path), and no model objects are built at all.


class QuantityFacts(NamedTuple):
    value: float | None
    comparator: str | None
    unit: str | None
    system: str | None
    code: str | None


class ObservationFacts(NamedTuple):
    id: str | None
    version_id: str | None
    status: str
    codings: tuple[tuple[str | None, str | None], ...]  # (system, code)
    subject: str | None  # subject.reference
    effective: str | None  # effectiveDateTime, else effectivePeriod.start, else effectiveInstant, else issued
    quantity: QuantityFacts | None
    ranges: tuple[tuple[QuantityFacts | None, QuantityFacts | None], ...]  # referenceRange (low, high)
    interpretations: tuple[tuple[str | None, ...], ...]  # interpretation[].coding[].code
    last_updated: str | None = None  # meta.lastUpdated (which of several versions is the latest)


def _q_facts(q: Quantity | None) -> QuantityFacts | None:
    return None if q is None else QuantityFacts(q.value, q.comparator, q.unit, q.system, q.code)


def observation_facts_from_model(obs: Observation) -> ObservationFacts:
    """The values the builder reads, from a validated Observation."""
    return ObservationFacts(
        obs.id, obs.meta.versionId if obs.meta else None, obs.status,
        tuple((c.system, c.code) for c in obs.code.coding),
        obs.subject.reference if obs.subject else None,
        obs.effectiveDateTime or (obs.effectivePeriod.start if obs.effectivePeriod else None) or obs.effectiveInstant or obs.issued,
        _q_facts(obs.valueQuantity),
        tuple((_q_facts(rr.low), _q_facts(rr.high)) for rr in obs.referenceRange),
        tuple(tuple(c.code for c in ic.coding) for ic in obs.interpretation),
        obs.meta.lastUpdated if obs.meta else None,
    )


_S = frozenset({str, type(None)})  # a clean optional string element


def _fast_quantity(q: Any) -> QuantityFacts | None:
    if q is None:
        return None
    if type(q) is not dict:
        raise _NotClean
    get = q.get
    v, comparator, unit, system, code = get("value"), get("comparator"), get("unit"), get("system"), get("code")
    if v is not None and type(v) is not float:
        if type(v) is not int:
            raise _NotClean
        v = float(v)
    if type(comparator) not in _S or type(unit) not in _S or type(system) not in _S or type(code) not in _S:
        raise _NotClean
    return QuantityFacts(v, comparator and comparator.strip(), unit, system and system.strip(), code and code.strip())


def _fast_codings(concept: Any) -> list[tuple[str | None, str | None]]:
    """A clean CodeableConcept's (system, code) pairs."""
    if type(concept) is not dict:
        raise _NotClean
    get = concept.get
    coding = get("coding")
    if type(get("text")) not in _S:
        raise _NotClean
    if coding is None:
        return []
    if type(coding) is not list:
        raise _NotClean
    out = []
    for c in coding:
        if type(c) is not dict:
            raise _NotClean
        system, code = c.get("system"), c.get("code")
        if type(system) not in _S or type(code) not in _S or type(c.get("display")) not in _S:
            raise _NotClean
        out.append((system and system.strip(), code and code.strip()))
    return out


def _array(v: Any) -> list:
    if v is None:
        return []
    if type(v) is list:
        return v
    raise _NotClean


def observation_facts(raw: Any) -> ObservationFacts:
    """The values the builder reads from a clean Observation; raises when the tolerant path must decide."""
    if type(raw) is not dict:
        raise _NotClean
    get = raw.get
    status, code, rid, edt, einst, issued = (get("status"), get("code"), get("id"), get("effectiveDateTime"),
                                             get("effectiveInstant"), get("issued"))
    if (get("resourceType") != "Observation" or type(status) is not str or type(code) is not dict
            or type(rid) not in _S or type(edt) not in _S or type(einst) not in _S or type(issued) not in _S):
        raise _NotClean
    meta, subject, period = get("meta"), get("subject"), get("effectivePeriod")
    version = ref = pstart = updated = None
    if meta is not None:
        if type(meta) is not dict:
            raise _NotClean
        version, updated = meta.get("versionId"), meta.get("lastUpdated")
        if type(version) not in _S or type(updated) not in _S:
            raise _NotClean
    if subject is not None:
        if type(subject) is not dict:
            raise _NotClean
        ref = subject.get("reference")
        if type(ref) not in _S or type(subject.get("display")) not in _S:
            raise _NotClean
    if period is not None:
        if type(period) is not dict:
            raise _NotClean
        pstart = period.get("start")
        if type(pstart) not in _S or type(period.get("end")) not in _S:
            raise _NotClean
    quantity = _fast_quantity(get("valueQuantity"))
    ranges = []
    for rr in _array(get("referenceRange")):
        if type(rr) is not dict or type(rr.get("text")) not in _S:
            raise _NotClean
        ranges.append((_fast_quantity(rr.get("low")), _fast_quantity(rr.get("high"))))
    interpretations = []
    for ic in _array(get("interpretation")):
        interpretations.append(tuple([c for _, c in _fast_codings(ic)]))
    # the model strips codes (Code); the first non-empty effective element wins
    effective = (edt and edt.strip()) or (pstart and pstart.strip()) or (einst and einst.strip()) or (issued and issued.strip())
    return ObservationFacts(
        rid and rid.strip(), version and version.strip(), status.strip(), tuple(_fast_codings(code)),
        ref and ref.strip(), effective, quantity, tuple(ranges), tuple(interpretations), updated and updated.strip(),
    )
