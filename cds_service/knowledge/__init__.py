"""Versioned clinical knowledge: loaded from data files, validated at start-up, immutable afterwards."""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigurationError
from ..yaml_files import YAMLError, load_yaml

DATA_DIR = Path(__file__).resolve().parent / "data"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    title: str
    citation: str
    url: str
    verified: bool = True


class CodeDef(_Strict):
    code: str
    system: str = LOINC
    display: str = ""
    verified: bool = True


class Analyte(_Strict):
    id: str = ""
    display: str
    kind: Literal["concentration", "excretion-24h", "ratio", "rate", "mass", "length"]
    canonical_unit: str
    molar_mass: float | None = None
    valence: int | None = None
    molar_ratio_factor: float | None = None
    # units some systems send for this analyte that mean another unit (said in the knowledge file, with why)
    unit_equivalents: dict[str, str] = Field(default_factory=dict)
    codes: list[CodeDef]


class Threshold(_Strict):
    value: Any
    unit: str = ""
    source: str
    note: str = ""
    verified: bool = True


class ConditionSet(_Strict):
    display: str
    codes: list[CodeDef]
    # code-system prefixes that belong to the set (ICD-10-CM categories such as O14 cover every subcode)
    prefixes: list[CodeDef] = Field(default_factory=list)


class Monitoring(_Strict):
    """A label or guideline that recommends measuring magnesium on a drug class (the monitoring-gap card's ground)."""

    source: str  # the document that recommends it (a source id)
    says: str  # what it recommends, in a few words (quoted on the card)
    min_days: int = 0  # on the drug longer than this before a missing magnesium counts as a gap
    min_days_source: str | None = None  # where min_days comes from (default: the same source)


class DrugClass(_Strict):
    id: str = ""
    display: str
    wasting: bool
    mechanism: str = ""
    source: str
    safer_alternative: bool = False  # an alternative without magnesium wasting usually exists: "remove the draft" may be offered
    exposure_window_days: int | None = None  # a completed/stopped course counts as recent exposure this long
    exposure_source: str | None = None
    measure_before_cycle: bool = False  # a drafted dose needs a recent magnesium before it is given
    measure_before_cycle_source: str | None = None
    local_route_note: str = ""  # said when a local-route product of the class is set aside
    local_route_source: str | None = None
    monitoring: Monitoring | None = None  # only classes with one get the monitoring-gap card


class Ingredient(_Strict):
    id: str = ""
    classes: list[str]
    rxcui: str | None = None
    other_rxcui: list[str] = Field(default_factory=list)
    atc: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)
    daily_max: str | None = None  # threshold key of this ingredient's own daily ceiling (vitamin D analogues)
    verified: bool = True
    note: str = ""


class RouteDef(_Strict):
    systemic: bool = True  # false: a local route (eye, ear, skin, airway, nose, vagina, rectum)
    snomed: list[str] = Field(default_factory=list)
    words: list[str] = Field(default_factory=list)


class IndicatorCase(_Strict):
    """One case of a rule's finding: its CDS Hooks indicator, when it applies, the thresholds and policies that
    decide it and the source of the grading (issue 16: indicator policy in one place)."""
    level: Literal["info", "warning", "critical"]
    when: str
    thresholds: list[str] = Field(default_factory=list)
    policies: list[str] = Field(default_factory=list)
    source: str


class KnowledgeModel(_Strict):
    version: str
    topic_system: str
    sources: dict[str, Source]
    unit_aliases: dict[str, str]
    analytes: dict[str, Analyte]
    thresholds: dict[str, Threshold]
    policies: dict[str, Threshold]
    conditions: dict[str, ConditionSet]
    classes: dict[str, DrugClass]
    ingredients: dict[str, Ingredient]
    routes: dict[str, RouteDef]
    route_source: str = "fhir-route-codes"
    # sources kept beside the drug classes that cite them (drugs.yaml), merged into ``sources`` on load
    drug_sources: dict[str, Source] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_drug_sources(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("drug_sources"):
            sources = data.get("sources") or {}

            def dump(v: Any) -> Any:
                return v.model_dump() if isinstance(v, BaseModel) else v

            def same(a: Any, b: Any) -> bool:  # a dumped model carries both (merged) copies: equal ones are fine
                return bool(dump(a) == dump(b))

            both = {k for k in set(sources) & set(data["drug_sources"]) if not same(sources[k], data["drug_sources"][k])}
            if both:
                raise ValueError(f"drug_sources: defined twice (also in sources): {sorted(both)}")
            data = {**data, "sources": {**(data.get("sources") or {}), **data["drug_sources"]}}
        return data
    indicators: dict[str, dict[str, IndicatorCase]] = Field(default_factory=dict)  # rule id -> case -> grading

    @model_validator(mode="after")
    def _check_references(self) -> KnowledgeModel:
        problems: list[str] = []
        for group in ("thresholds", "policies"):
            for key, t in getattr(self, group).items():
                if t.source not in self.sources:
                    problems.append(f"{group}.{key}: unknown source {t.source!r}")
        for key, c in self.classes.items():
            if c.measure_before_cycle and c.measure_before_cycle_source is None:
                problems.append(f"classes.{key}: measure_before_cycle needs a measure_before_cycle_source")
            for src in (c.source, c.exposure_source, c.local_route_source, c.measure_before_cycle_source):
                if src is not None and src not in self.sources:
                    problems.append(f"classes.{key}: unknown source {src!r}")
            if c.monitoring is not None:
                if not c.wasting:
                    problems.append(f"classes.{key}: monitoring is only for magnesium-wasting classes")
                for src in (c.monitoring.source, c.monitoring.min_days_source):
                    if src is not None and src not in self.sources:
                        problems.append(f"classes.{key}.monitoring: unknown source {src!r}")
                if c.monitoring.min_days < 0:
                    problems.append(f"classes.{key}.monitoring: min_days must be >= 0")
            if c.exposure_window_days is not None and c.exposure_source is None:
                problems.append(f"classes.{key}: exposure_window_days needs an exposure_source")
        for rule, cases in self.indicators.items():
            for case, ic in cases.items():
                where = f"indicators.{rule}.{case}"
                if ic.source not in self.sources:
                    problems.append(f"{where}: unknown source {ic.source!r}")
                problems += [f"{where}: unknown threshold {t!r}" for t in ic.thresholds if t not in self.thresholds]
                problems += [f"{where}: unknown policy {p!r}" for p in ic.policies if p not in self.policies]
        if self.route_source not in self.sources:
            problems.append(f"route_source: unknown source {self.route_source!r}")
        for key, ing in self.ingredients.items():
            for cls in ing.classes:
                if cls not in self.classes:
                    problems.append(f"ingredients.{key}: unknown class {cls!r}")
            if ing.daily_max is not None and ing.daily_max not in self.thresholds:
                problems.append(f"ingredients.{key}: unknown daily_max threshold {ing.daily_max!r}")
        seen: dict[tuple[str, str], str] = {}
        for key, a in self.analytes.items():
            if a.kind == "concentration" and a.canonical_unit in {"mg/dL", "mmol/L"} and a.molar_mass is None \
                    and key not in {"albumin"}:
                problems.append(f"analytes.{key}: a concentration needs molar_mass for unit conversion")
            for code in a.codes:
                k = (code.system, code.code)
                if k in seen:
                    problems.append(f"code {code.code} is in both {seen[k]} and {key}")
                seen[k] = key
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True)
class Knowledge:
    """The loaded knowledge with lookup indexes. Immutable; pass it explicitly to rules."""

    model: KnowledgeModel
    clinical_drugs: dict[str, tuple[str, ...]]  # rxcui -> ingredient ids
    path: str
    # one alternation of every name (longest first, whole words) and name -> (rank, ingredient id)
    _names_pattern: re.Pattern[str] | None = field(default=None, repr=False)
    _name_index: dict[str, tuple[int, str]] = field(default_factory=dict, repr=False)

    # -- simple accessors -------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.model.version

    @property
    def topic_system(self) -> str:
        return self.model.topic_system

    def threshold(self, key: str) -> Threshold:
        return self.model.thresholds[key]

    def policy(self, key: str) -> Any:
        return self.model.policies[key].value

    def source(self, key: str) -> Source:
        return self.model.sources[key]

    def indicator(self, rule: str, case: str) -> str:
        """The indicator the knowledge's indicator policy gives ``rule`` in ``case`` (KeyError: a rule bug)."""
        return self.model.indicators[rule][case].level

    @cached_property
    def loinc_to_analyte(self) -> dict[str, str]:
        return {c.code: key for key, a in self.model.analytes.items() for c in a.codes if c.system == LOINC}

    def observation_codes(self, analytes: list[str] | None = None) -> list[str]:
        keys = analytes or list(self.model.analytes)
        return [c.code for k in keys for c in self.model.analytes[k].codes if c.system == LOINC]

    @cached_property
    def condition_index(self) -> dict[tuple[str, str], str]:
        return {(c.system, c.code): key for key, cs in self.model.conditions.items() for c in cs.codes}

    @cached_property
    def _condition_prefixes(self) -> tuple[tuple[str, str, str], ...]:
        return tuple((c.system, c.code, key) for key, cs in self.model.conditions.items() for c in cs.prefixes)

    def condition_of(self, codes: Iterable[tuple[str, str]]) -> str | None:
        """The condition set the first matching (system, code) belongs to: exact codes, then category prefixes."""
        codes = list(codes)
        index = self.condition_index
        for c in codes:
            if c in index:
                return index[c]
        for system, code in codes:
            for p_system, prefix, key in self._condition_prefixes:
                if system == p_system and (code == prefix or code.startswith(prefix + ".") or
                                           (code.startswith(prefix) and len(code) > len(prefix) and code[len(prefix)].isdigit())):
                    return key
        return None

    @cached_property
    def rxcui_to_ingredient(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, ing in self.model.ingredients.items():
            for code in ([ing.rxcui] if ing.rxcui else []) + ing.other_rxcui:
                out[code] = key
        return out

    @cached_property
    def atc_to_ingredient(self) -> dict[str, str]:
        return {code: key for key, ing in self.model.ingredients.items() for code in ing.atc}

    def match_names(self, text: str) -> list[str]:
        """Ingredient ids whose name appears as a whole word in ``text`` (longest names first)."""
        if self._names_pattern is None:
            return []
        hits = {self._name_index[m.group(1)] for m in self._names_pattern.finditer(text.lower())}
        return list(dict.fromkeys(ingredient for _, ingredient in sorted(hits)))

    @cached_property
    def route_patterns(self) -> dict[str, re.Pattern[str]]:
        """Route name -> one whole-word pattern of its words (dosage route text, drug form, label)."""
        return {name: whole_words(r.words) for name, r in self.model.routes.items() if r.words}

    @cached_property
    def route_by_snomed(self) -> dict[str, str]:
        return {code: name for name, r in self.model.routes.items() for code in r.snomed}

    def route_is_systemic(self, route: str | None) -> bool:
        """A route counts as systemic when the knowledge says so; no route stated counts as systemic (safe side)."""
        r = self.model.routes.get(route) if route else None
        return True if r is None else r.systemic

    def unit(self, raw: str | None) -> str | None:
        if raw is None:
            return None
        u = raw.strip()
        return self.model.unit_aliases.get(u.lower(), self.model.unit_aliases.get(u, u))


def whole_words(words: list[str]) -> re.Pattern[str]:
    """One pattern matching any of ``words`` (lower case) as a whole word, the first listed winning at a position."""
    return re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(w.lower()) for w in words) + r")(?![a-z0-9])")


def load_knowledge(path: str | Path | None = None) -> Knowledge:
    """Load and validate the knowledge file set in ``path`` (default: the packaged one).

    Raises ConfigurationError with every problem listed when anything is wrong.
    """
    directory = Path(path) if path else DATA_DIR
    try:
        raw: dict[str, Any] = {}
        for name in ("knowledge.yaml", "drugs.yaml"):
            with open(directory / name, encoding="utf-8") as fh:
                part = load_yaml(fh) or {}
            overlap = set(raw) & set(part)
            if overlap:
                raise ConfigurationError(f"{name}: keys defined twice: {sorted(overlap)}")
            raw.update(part)
        for group in ("analytes", "classes", "ingredients"):
            for key, value in (raw.get(group) or {}).items():
                if isinstance(value, dict):
                    value.setdefault("id", key)
        model = KnowledgeModel.model_validate(raw)
        clinical: dict[str, list[str]] = {}
        with open(directory / "rxnorm-clinical-drugs.csv", encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                ing = row["ingredient"].strip()
                if ing not in model.ingredients:
                    raise ConfigurationError(f"rxnorm-clinical-drugs.csv: rxcui {row['rxcui']} maps to unknown ingredient {ing!r}")
                clinical.setdefault(row["rxcui"].strip(), []).append(ing)
    except FileNotFoundError as exc:
        raise ConfigurationError(f"knowledge file missing: {exc.filename}") from None
    except YAMLError as exc:
        raise ConfigurationError(f"knowledge YAML is not valid: {exc}") from None
    except ValidationError as exc:
        raise ConfigurationError(f"knowledge in {directory} is not valid:\n{exc}") from None
    patterns = sorted(
        ((name, key) for key, ing in model.ingredients.items() for name in ing.names),
        key=lambda item: -len(item[0]),
    )
    index = {name.lower(): (rank, key) for rank, (name, key) in reversed(list(enumerate(patterns)))}
    names_pattern = whole_words([name for name, _ in patterns]) if patterns else None
    return Knowledge(
        model=model,
        clinical_drugs={k: tuple(dict.fromkeys(v)) for k, v in clinical.items()},
        path=str(directory),
        _names_pattern=names_pattern,
        _name_index=index,
    )
