"""The same sections, in the same order, on every card: **Values used**, **Assessment**, **What to do**, **Source**.

Rules write their detail as Markdown lines; a rule may say where a line goes with a section marker line
(``VALUES``, ``ASSESSMENT``, ``TODO``, ``SOURCE``: every line after it, until the next marker). Lines before any
marker are placed by what they are:

- values used: a fact line written by the fact helpers (lab, kidney assessment, medication, calcium judged on,
  a pointer to the card owning a fact) with its sub-lines, and the heading line just before such lines;
- what to do: a line that starts with an instruction ("Check ...", "Replace ...", "- no aggressive ...");
- source: the local-policy note;
- assessment: everything else.

The order of lines inside a section is the rule's order. Empty sections are left out, except Assessment and
Source (every card says what was concluded and from what source).
"""
from __future__ import annotations

import re

from ..rules.base import ASSESSMENT, TODO, VALUES

SOURCE = "§source"
ORDER = (VALUES, ASSESSMENT, TODO, SOURCE)
TITLES = {VALUES: "Values used", ASSESSMENT: "Assessment", TODO: "What to do", SOURCE: "Source"}
HEADINGS = tuple(f"**{t}**" for t in TITLES.values())

_FHIR_REF = re.compile(r"\b(?:Observation|MedicationRequest|MedicationStatement|MedicationAdministration|"
                       r"MedicationDispense|Condition|ServiceRequest|Patient)/[A-Za-z0-9\-.]+")
_FACT_HEAD = re.compile(r"^- (?:kidney function:|judged on |\*\*|[^*\n]{1,60}?: \*\*)")
_ADVICE = re.compile(
    r"^(?:- )?(?:_?)(?:check|replace|review|monitor|measure|re-measure|order|stop|remove|give|consider|correct|watch|"
    r"keep|dose|start|repeat|avoid|hold|reduce|switch|use|continue|record|draw|send|confirm|no aggressive|"
    r"toxicity watch|suggested|if it must|before the|draft|ask|treat|replace)\b", re.I)


def _is_fact(block: list[str]) -> bool:
    head = block[0]
    return head.startswith("- ") and (bool(_FACT_HEAD.match(head)) or bool(_FHIR_REF.search(head))
                                      or "; see the " in head)


def _blocks(lines: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    for line in lines:
        if line.startswith("  ") and out and out[-1][0].startswith("- "):
            out[-1].append(line)
        else:
            out.append([line])
    return out


def place(detail: str) -> dict[str, list[str]]:
    """The detail's lines by section (markers honoured, the rest placed by what they are)."""
    placed: dict[str, list[str]] = {k: [] for k in ORDER}
    marked: str | None = None
    blocks = _blocks(detail.split("\n"))
    for i, block in enumerate(blocks):
        head = block[0]
        if head.strip() in ORDER:
            marked = head.strip()
            continue
        if marked is not None and not head.startswith("_Local policy"):
            placed[marked] += block
            continue
        if head.strip() == "":
            section = None
        elif _is_fact(block):
            section = VALUES
        elif head.startswith("_Local policy"):
            section = SOURCE
        elif head.rstrip().endswith(":") and _next_is_fact(blocks, i):
            section = VALUES  # the heading of the fact lines below it
        elif _ADVICE.match(head.strip()):
            section = TODO
        else:
            section = ASSESSMENT
        if section is None:
            for k in ORDER:  # a blank line separates paragraphs in every section
                if placed[k] and placed[k][-1] != "":
                    placed[k].append("")
            continue
        placed[section] += block
    return placed


def _next_is_fact(blocks: list[list[str]], i: int) -> bool:
    for block in blocks[i + 1:]:
        if block[0].strip() == "":
            continue
        return _is_fact(block)
    return False


def render(detail: str, source_line: str, summary: str = "") -> str:
    """The card detail: the sections in order, each under its bold title; ``source_line`` ends the Source section;
    a card with nothing else to assess has its summary as the assessment."""
    placed = place(detail)
    placed[SOURCE] = [ln for ln in placed[SOURCE] if ln != ""] + [source_line]
    parts = []
    for key in ORDER:
        lines = placed[key]
        while lines and lines[-1] == "":
            lines.pop()
        while lines and lines[0] == "":
            lines.pop(0)
        if not lines and key != ASSESSMENT:
            continue
        if not lines:
            lines = [summary or "See the values above."]
        parts.append(f"**{TITLES[key]}**\n" + "\n".join(lines))
    return "\n\n".join(parts)
