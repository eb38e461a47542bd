"""Observations decoded from the request bytes: a prefetched Bundle of clean Observations is decoded straight
into these msgspec Structs (api/body.py), without building a dict per JSON object. They accept only what
lean.observation_facts accepts (every read element of its exact JSON type; unknown elements skipped); anything
else makes the decoder fail and the whole value is read as plain JSON and takes the paths of record/lean.py
(which define behaviour). tests/bench/test_fast_path_equivalence.py checks that both give the same facts.
"""
from __future__ import annotations

import sys
from typing import Annotated, Literal

import msgspec

from .lean import ObservationFacts, QuantityFacts


class _Typed(msgspec.Struct, kw_only=True, gc=False):
    pass


class TCoding(_Typed):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class TConcept(_Typed):
    coding: list[TCoding] | None = None
    text: str | None = None


Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]  # orjson refuses 1e999


class TQuantity(_Typed):
    value: Finite | None = None
    comparator: str | None = None
    unit: str | None = None
    system: str | None = None
    code: str | None = None


class TReference(_Typed):
    reference: str | None = None
    display: str | None = None


class TPeriod(_Typed):
    start: str | None = None
    end: str | None = None


class TMeta(_Typed):
    versionId: str | None = None
    lastUpdated: str | None = None


class TRange(_Typed):
    low: TQuantity | None = None
    high: TQuantity | None = None
    text: str | None = None


class ObservationData(_Typed):
    """A clean Observation as decoded from bytes: only the elements the builder reads."""

    resourceType: Literal["Observation"]
    status: str
    code: TConcept
    id: str | None = None
    meta: TMeta | None = None
    subject: TReference | None = None
    effectiveDateTime: str | None = None
    effectiveInstant: str | None = None
    effectivePeriod: TPeriod | None = None
    issued: str | None = None
    valueQuantity: TQuantity | None = None
    interpretation: list[TConcept] | None = None
    referenceRange: list[TRange] | None = None


class ObservationEntry(_Typed):
    resource: ObservationData


class ObservationBundle(_Typed):
    """A prefetched Bundle whose every entry is a clean Observation."""

    resourceType: Literal["Bundle"]
    entry: list[ObservationEntry] | None = None


def _t_quantity(q: TQuantity | None) -> QuantityFacts | None:
    if q is None:
        return None
    comparator, system, code = q.comparator, q.system, q.code
    return QuantityFacts(q.value, comparator and comparator.strip(), q.unit, system and system.strip(), code and code.strip())


def _t_codes(concept: TConcept) -> tuple[tuple[str | None, str | None], ...]:
    return tuple([(c.system and c.system.strip(), c.code and c.code.strip()) for c in concept.coding or ()])


def observation_facts_typed(obs: ObservationData) -> ObservationFacts:
    """observation_facts for an Observation decoded from bytes (the same values, the same stripping)."""
    meta, subject, period = obs.meta, obs.subject, obs.effectivePeriod
    version = updated = ref = pstart = None
    if meta is not None:
        version, updated = meta.versionId, meta.lastUpdated
    if subject is not None:
        ref = subject.reference
    if period is not None:
        pstart = period.start
    edt, einst, issued, rid = obs.effectiveDateTime, obs.effectiveInstant, obs.issued, obs.id
    effective = (edt and edt.strip()) or (pstart and pstart.strip()) or (einst and einst.strip()) or (issued and issued.strip())
    return ObservationFacts(
        rid and rid.strip(), version and version.strip(), obs.status.strip(), _t_codes(obs.code),
        ref and ref.strip(), effective, _t_quantity(obs.valueQuantity),
        tuple([(_t_quantity(rr.low), _t_quantity(rr.high)) for rr in obs.referenceRange or ()]),
        tuple([tuple([c.code and c.code.strip() for c in ic.coding or ()]) for ic in obs.interpretation or ()]),
        updated and updated.strip(),
    )


OBSERVATION_BUNDLE = msgspec.json.Decoder(ObservationBundle)
