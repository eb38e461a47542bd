"""One problem, one card: the response-level step between the rules and the cards.

Rules write each card on its own; several cards of one response then repeat the same facts (a magnesium
result, the kidney assessment, a drafted order) and the same advice (the renal ceiling, the IV regimen).
``compose`` decides, per response, which card owns each of them and makes the others refer to it in a few
words ("kidney function: 13 mL/min, see the kidney card").

What is owned, and how it is recognised (the keys come from the one helper that writes each kind of line):

- the kidney assessment block (``rules.common.kidney_line``: "- kidney function: ..."): key ``kidney``;
  the reference names ``kidney_summary`` (the same one assessment, so cards never disagree);
- a lab line (``rules.base.lab_fact_line``: "- name: **value** (Observation/id)"): key = the Observation;
  the reference names the value and date, read from the record by that reference;
- a medication line (``rules.medications.med_line`` / ``exposure_line``: "- **label** ...; MedicationRequest/id"):
  key = the order; the reference names the drug; sub-lines (mechanism, per-dose arithmetic) stay unless the
  owner already says them;
- every other sentence of 40 characters or more (advice such as the renal ceiling or the IV regimen): key =
  the sentence; the reference is "see the <card> card".

The owner is the card ranked first among those holding the item: the card whose topic the item is
(``PREFERRED``), then the higher indicator, then registry order. Nothing is dropped: every item stays, in
full, on its owner. The per-card source footer cites a source once per response; later cards citing the
same source say where it is (see ``source_seen``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..rules.base import INDICATOR_RANK, Finding, RuleContext, display_unit, short_value
from ..rules.common import estimate_text
from ..rules.regimens import iv_regimen_text, oral_regimen, paediatric_text, renal_ceiling_text

MIN_SENTENCE = 40  # the length from which a sentence is owned by one card (issue 16)

# a few words naming each card in references ("see the kidney card")
CARD_NAME = {
    "hypomagnesemia": "low-magnesium",
    "hypermagnesemia": "high-magnesium",
    "refractory-hypomagnesemia": "refractory-magnesium",
    "magnesium-wasting-drug": "wasting-drug",
    "magnesium-monitoring-gap": "monitoring",
    "femg-renal-wasting": "FEMg",
    "femg-extrarenal-loss": "FEMg",
    "femg-needed": "FEMg",
    "refractory-hypokalemia": "potassium",
    "refractory-hypocalcemia": "calcium",
    "renal-replacement-caution": "kidney",
    "order-wasting-drug": "drafted-drug",
    "order-potassium-without-magnesium": "drafted-potassium",
    "order-magnesium-renal": "renal-ceiling",
    "order-iv-magnesium": "IV-magnesium",
    "order-vitamin-d-analogue": "vitamin-D",
    "data-gaps": "partial-data",
}

# the card whose topic a kind of fact is owns it when present (then indicator, then registry order)
PREFERRED = {
    "kidney": ("order-magnesium-renal", "renal-replacement-caution", "hypermagnesemia"),
    "lab:magnesium": ("hypomagnesemia", "refractory-hypomagnesemia", "hypermagnesemia"),
    "lab:potassium": ("refractory-hypokalemia",),
    "lab:calcium": ("refractory-hypocalcemia",),
    "med:magnesium-supplement:draft": ("order-magnesium-renal", "order-iv-magnesium"),
    "med:magnesium-supplement": ("refractory-hypomagnesemia", "order-magnesium-renal"),
    "med:wasting": ("magnesium-wasting-drug", "order-wasting-drug"),
    "med:vitamin-d-analogue:draft": ("order-vitamin-d-analogue",),
    "med:potassium-supplement:draft": ("order-potassium-without-magnesium",),
}

# advice written once by one helper (rules/regimens.py): owned by one card, named by the others
PHRASE_NAME = {"renal-ceiling": "the renal ceiling", "iv-regimen": "the IV regimen", "oral-regimen": "the oral regimen",
               "paediatric": "Child: dose magnesium by weight from a paediatric reference"}
PREFERRED.update({
    "advice:renal-ceiling": ("order-magnesium-renal", "renal-replacement-caution"),
    "advice:iv-regimen": ("order-iv-magnesium", "refractory-hypomagnesemia", "hypomagnesemia"),
    "advice:oral-regimen": ("hypomagnesemia", "refractory-hypomagnesemia"),
    "advice:paediatric": ("hypomagnesemia", "refractory-hypomagnesemia"),
})


def advice_phrases(ctx: RuleContext) -> dict[str, str]:
    """The response's advice phrases, outermost first (the IV and oral regimens contain the renal ceiling)."""
    out: dict[str, str] = {}
    if ctx.child:
        out["paediatric"] = paediatric_text(ctx)
    iv = iv_regimen_text(ctx)
    if iv:
        out["iv-regimen"] = iv
    oral = oral_regimen(ctx)
    if oral is not None:
        out["oral-regimen"] = oral.text
    out["renal-ceiling"] = renal_ceiling_text(ctx)
    return out


def _mark(key: str) -> str:
    return f"\u2063{key}\u2063"  # INVISIBLE SEPARATOR: never in card text


# rules.common.unreadable_note / with_unreadable_named: a newer result that could not be read
_UNREADABLE = re.compile(r"^\s*- _a newer (.+?) result of (\d{4}-\d{2}-\d{2})(?: \([^)]*\))? could not be read .*?: "
                         r"((?:Observation)/[A-Za-z0-9\-.]+);")
_SPLIT = re.compile(r"(?<=[.;:])\s+")
_LAB = re.compile(r"^- [^*\n]+?: \*\*.+\((Observation/[A-Za-z0-9\-.]+)\)")
_MED_REF = re.compile(r"; ((?:MedicationRequest|MedicationStatement|MedicationAdministration|MedicationDispense)/[A-Za-z0-9\-.]+)")


def kidney_value(ctx: RuleContext) -> str:
    """The one kidney assessment in a few words: '13 mL/min', 'below 20 mL/min (kidney failure recorded)', 'unknown'."""
    kf = ctx.kidney
    if kf.estimate is not None:
        return estimate_text(kf.estimate, kf.limit)
    if kf.conditions:
        return f"below {kf.limit:g} mL/min (kidney failure or dialysis recorded)"
    return "unknown"


def normal(fragment: str) -> str:
    """A sentence as compared across cards: emphasis and list marks off, spaces collapsed."""
    return " ".join(fragment.replace("**", "").replace("`", "").strip(" -*_").split())


def sentences(line: str) -> list[str]:
    """A line split like the duplicate check splits it (after '.', ';' or ':')."""
    return [s for s in _SPLIT.split(line.strip()) if s]


@dataclass
class _Block:
    lines: list[str]
    key: str | None = None  # owned fact key, or None for free text

    @property
    def head(self) -> str:
        return self.lines[0]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blocks(detail: str) -> list[_Block]:
    """Detail Markdown as blocks: a list item with its deeper-indented sub-lines, or one other line. The kidney
    assessment starts a block wherever it is nested (the refractory pathway quotes it inside a step)."""
    out: list[_Block] = []
    for line in detail.split("\n"):
        top = out[-1] if out else None
        if (top is not None and top.head.lstrip().startswith("- ") and line.strip() and _indent(line) > _indent(top.head)
                and not line.lstrip().startswith("- kidney function:")):
            top.lines.append(line)
        else:
            out.append(_Block([line]))
    return out


class Composer:
    def __init__(self, ctx: RuleContext, findings: list[Finding], rule_order: Iterable[str]):
        self.ctx = ctx
        self.findings = findings
        order = {r: i for i, r in enumerate(rule_order)}
        self._base_rank = {id(f): (-INDICATOR_RANK[f.indicator], order.get(f.rule, len(order)), i)
                           for i, f in enumerate(findings)}
        self.labs = {r.source.reference: r for rs in ctx.record.labs.values() for r in rs}
        meds = list(ctx.record.medications) + list(ctx.record.draft_medications) + list(ctx.record.medication_history)
        self.meds = {m.source.reference: m for m in meds}
        self.heads: dict[str, str] = {}
        self.owner_heads: dict[str, str] = {}
        self.unreadable: dict[str, tuple[str, str]] = {}  # reference -> (analyte, date)
        self.phrases = advice_phrases(ctx)

    # ------------------------------------------------------------------ keys and owners
    def key(self, block: _Block) -> str | None:
        head = block.head
        if head.lstrip().startswith("- kidney function:"):
            return "kidney"
        if head.startswith("- judged on **"):  # rules.calcium.CalciumStatus.lines
            refs = re.findall(r"\((Observation/[A-Za-z0-9\-.]+)\)", "\n".join(block.lines))
            return "calcium-status:" + "|".join(refs) if refs else None
        m = _UNREADABLE.match(head)
        if m:
            self.unreadable[m.group(3)] = (m.group(1), m.group(2))
            return "unreadable:" + m.group(3)
        m = _LAB.match(head)
        if m and m.group(1) in self.labs:
            return "lab:" + m.group(1)
        if head.startswith("- **"):
            m = _MED_REF.search(head)
            if m and m.group(1) in self.meds:
                return "med:" + m.group(1)
        return None

    def kind(self, key: str) -> str:
        """The ownership kind of a key: 'kidney', 'lab:<analyte>', 'med:<class>'."""
        if key.startswith("calcium-status:"):
            return "lab:calcium"
        if key.startswith("unreadable:"):  # with the results of its analyte
            analyte = self.unreadable[key[11:]][0].replace(" ", "_")
            return "lab:" + ("calcium" if analyte.startswith("calcium") else analyte)
        if key.startswith("lab:"):
            analyte = self.labs[key[4:]].analyte
            return "lab:" + ("calcium" if analyte.startswith("calcium") else analyte)
        if key.startswith("med:"):
            m = self.meds[key[4:]]
            classes = m.classes()
            if any(self.ctx.knowledge.model.classes[c].wasting for c in classes):
                return "med:wasting"
            return "med:" + (sorted(classes)[0] if classes else "") + (":draft" if m.draft else "")
        return key

    def rank(self, f: Finding, kind: str | None) -> tuple:
        preferred = PREFERRED.get(kind or "", ())
        pref = preferred.index(f.rule) if f.rule in preferred else len(preferred)
        return (pref,) + self._base_rank[id(f)]

    def owner(self, candidates: list[Finding], kind: str) -> Finding:
        """Of the findings that share something, the one whose card keeps it (the best ranked for ``kind``)."""
        return min(candidates, key=lambda f: self.rank(f, kind))

    # ------------------------------------------------------------------ references
    def name(self, f: Finding) -> str:
        return f"the {CARD_NAME.get(f.rule, f.rule)} card"

    def reference(self, key: str, owner: Finding) -> str:
        if key == "kidney":
            return f"- kidney function: {kidney_value(self.ctx)}; see {self.name(owner)}"
        if key.startswith("unreadable:"):
            analyte, day = self.unreadable[key[11:]]
            return f"- newer {analyte} ({day}): could not be read; see {self.name(owner)}"
        if key.startswith("calcium-status:"):
            m = re.search(r"\*\*(.+?)\*\*", self.heads[key])
            shown = m.group(1).replace(":", "") if m else "calcium"
            return f"- calcium judged on: {shown}; see {self.name(owner)}"
        if key.startswith("lab:"):
            r = self.labs[key[4:]]
            shown = re.search(r"\*\*(.+?)\*\*", self.owner_heads.get(key, ""))  # the value as the owner writes it
            value = (re.sub(r" \(reported [^)]*\)", "", shown.group(1)) if shown
                     else f"{short_value(r)} on {r.effective.date().isoformat()}")
            return f"- {r.analyte.replace('_', ' ')}: {value}; see {self.name(owner)}"
        med = self.meds[key[4:]]
        drug = med.drug_name
        dose = f" {med.dose.value:g} {display_unit(med.dose.unit)}" if med.dose is not None else ""
        return f"- {drug}{dose}{' (drafted)' if med.draft else ''}; see {self.name(owner)}"

    # ------------------------------------------------------------------ compose
    def compose(self) -> list[Finding]:
        parsed = {id(f): _blocks(self._phrases_marked(f)) for f in self.findings}
        holders: dict[str, list[Finding]] = {}
        for f in self.findings:
            for b in parsed[id(f)]:
                b.key = self.key(b)
                if b.key:
                    self.heads.setdefault(b.key, b.head)
                    holders.setdefault(b.key, [])
                    if f not in holders[b.key]:
                        holders[b.key].append(f)
        key_owner = {k: self.owner(fs, self.kind(k)) for k, fs in holders.items()}
        self.owner_heads = {b.key: b.head for f in self.findings for b in parsed[id(f)]
                            if b.key is not None and key_owner[b.key] is f}
        phrase_owner = {}
        for key in self.phrases:
            having = [f for f in self.findings if self.phrases[key] in f.detail]
            if having:
                phrase_owner[key] = self.owner(having, "advice:" + key)
        # blocks a card keeps in full decide where free sentences live
        kept_text: dict[int, list[str]] = {}
        for f in self.findings:
            kept_text[id(f)] = [ln for b in parsed[id(f)] if b.key is None or key_owner[b.key] is f for ln in b.lines]
        sentence_owner: dict[str, Finding] = {}
        for f in sorted(self.findings, key=lambda f: self.rank(f, None)):
            for ln in kept_text[id(f)]:
                for s in sentences(ln):
                    n = normal(s)
                    if len(n) >= MIN_SENTENCE:
                        sentence_owner.setdefault(n, f)
        out = []
        for f in self.findings:
            lines: list[str] = []
            for b in parsed[id(f)]:
                if b.key is not None and key_owner[b.key] is not f:
                    pointer = " " * _indent(b.head) + self.reference(b.key, key_owner[b.key])
                    if pointer not in lines:  # two orders alike: one pointer
                        lines.append(pointer)
                    if b.key == "kidney":
                        continue  # one assessment: its sub-lines are the owner's
                    for ln in b.lines[1:]:  # sub-lines the owner already says go with the pointer above
                        x = self._dedupe(ln, f, sentence_owner)
                        if x == ln:
                            lines.append(ln)
                    continue
                lines += [x for x in (self._dedupe(ln, f, sentence_owner) for ln in b.lines) if x is not None]
            detail = self._phrases_resolved(_tidy(lines), f, phrase_owner)
            out.append(f if detail == f.detail else replace(f, detail=detail))
        return out

    def _phrases_marked(self, f: Finding) -> str:
        """The detail with each advice phrase replaced by a marker (longest first: a phrase inside another stays
        inside it); markers are never split into sentences."""
        text = f.detail
        for key, phrase in self.phrases.items():
            text = text.replace(phrase, _mark(key))
        return text

    def _phrases_resolved(self, text: str, f: Finding, owners: dict[str, Finding]) -> str:
        """Markers back to the phrase on the owner card, to a pointer on the others; outer phrases first, with the
        phrases inside them marked again so that those resolve by their own owner."""
        keys = list(self.phrases)
        for i, key in enumerate(keys):
            owner = owners.get(key)
            if owner is None or owner is f:
                phrase = self.phrases[key]
                for inner in keys[i + 1:]:
                    phrase = phrase.replace(self.phrases[inner], _mark(inner))
                text = text.replace(_mark(key), phrase)
            else:
                text = text.replace(_mark(key), f"{PHRASE_NAME[key]} (see {self.name(owner)})")
        return text

    def _dedupe(self, line: str, f: Finding, owners: dict[str, Finding]) -> str | None:
        """The line with each sentence owned by another card replaced by a pointer to it (None: nothing left)."""
        indent = line[: len(line) - len(line.lstrip(" "))]
        body = line.strip()
        bullet = ""
        if body.startswith("- "):
            bullet, body = "- ", body[2:]
        parts = sentences(body)
        if not parts:
            return line
        changed, pointed, new = False, set(), []
        for s in parts:
            n = normal(s)
            owner = owners.get(n) if len(n) >= MIN_SENTENCE else None
            if owner is None or owner is f:
                new.append(s)
                continue
            changed = True
            if id(owner) not in pointed:
                pointed.add(id(owner))
                end = s[-1] if s[-1] in ".;:" else ""
                new.append(f"(see {self.name(owner)}){end or ''}")
        if not changed:
            return line
        return indent + bullet + " ".join(new)


def _tidy(lines: list[str]) -> str:
    """No runs of blank lines and no blank line at either end."""
    out: list[str] = []
    for ln in lines:
        if ln.strip() == "" and (not out or out[-1].strip() == ""):
            continue
        out.append(ln)
    while out and out[-1].strip() == "":
        out.pop()
    return "\n".join(out)


def compose(ctx: RuleContext, findings: list[Finding], rule_order: Iterable[str]) -> list[Finding]:
    """Each fact and piece of advice on one card of the response; the others refer to it."""
    if len(findings) < 2:
        return findings
    return Composer(ctx, findings, rule_order).compose()


def source_seen(findings: list[Finding]) -> dict[int, Finding]:
    """For each finding whose source an earlier card of the response already cites: that earlier finding."""
    first: dict[str, Finding] = {}
    seen: dict[int, Finding] = {}
    for f in findings:
        if f.source in first:
            seen[id(f)] = first[f.source]
        else:
            first[f.source] = f
    return seen
