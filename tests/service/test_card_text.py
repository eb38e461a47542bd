"""Cards a clinician reads in five seconds (issue 16), checked over EVERY fixture response.

The responses are the reviewed goldens (tests/service/golden/): test_scenarios.py keeps every golden equal to
what the service answers for its scenario and hook, so a rule over the goldens is a rule over the responses.

- one problem, one card: no sentence of 40 characters or more in two cards of one response (sentences split
  after '.', ';' or ':'; the per-card source line names the citation once per response and later cards point to
  the first, so it is checked like any other sentence), and no two cards disagree about kidney function;
- the same sections in the same order on every card, a summary under 140 characters, units as people write
  them, numbered lists from 1, "never measured" only when nothing was measured.
"""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from cds_service.cards import SUMMARY_MAX
from cds_service.cards.compose import MIN_SENTENCE, normal, sentences
from cds_service.cards.sections import HEADINGS
from cds_service.fixtures import HOOKS, list_scenarios, read_bundle
from cds_service.knowledge import load_knowledge
from cds_service.record.dates import parse_fhir_datetime
from tests.helpers.env import FIXED_NOW
from tests.helpers.golden import read_golden

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [f"{s.id}.{h}" for s in list_scenarios() for h in HOOKS]
KNOWLEDGE_VERSION = load_knowledge().version


def _response(case: str) -> dict:
    return json.loads(read_golden(GOLDEN / f"{case}.json", KNOWLEDGE_VERSION))


def _detail(card: dict) -> str:
    return "\n".join(card["detail"]) if isinstance(card["detail"], list) else card["detail"]


def _sentences(card: dict) -> set[str]:
    out = set()
    for line in (card["summary"] + "\n" + _detail(card)).split("\n"):
        for s in sentences(line.strip(" -*_")):
            n = normal(s)
            if len(n) >= MIN_SENTENCE:
                out.add(n)
    return out


def test_every_fixture_response_has_a_golden():
    assert all((GOLDEN / f"{c}.json").exists() for c in CASES)
    assert len(CASES) >= 150


@pytest.mark.parametrize("case", CASES)
def test_no_sentence_on_two_cards(case):
    seen: dict[str, int] = {}
    repeated = []
    for i, card in enumerate(_response(case)["cards"]):
        for s in _sentences(card):
            if s in seen and seen[s] != i:
                repeated.append(s)
            seen.setdefault(s, i)
    assert repeated == [], f"{case}: said on two cards: {repeated[:3]}"


_KIDNEY_VALUE = re.compile(r"kidney function: (?:\*\*(.+?)\*\*|([^;*\n]+); see the )")  # the assessment or a pointer to it
_CLEARANCE = re.compile(r"creatinine clearance (?:at most |at least |between )?(\d+(?: and \d+)?) mL/min")
_UNKNOWN = re.compile(r"kidney function (?:unknown|could not be computed)|kidney function: \*\*unknown\*\*", re.I)


@pytest.mark.parametrize("case", CASES)
def test_cards_agree_about_kidney_function(case):
    values, clearances, unknown, known = set(), set(), [], []
    for card in _response(case)["cards"]:
        text = card["summary"] + "\n" + _detail(card)
        values |= {a or b for a, b in _KIDNEY_VALUE.findall(text)}
        clearances |= set(_CLEARANCE.findall(text))
        (unknown if _UNKNOWN.search(text) else known).append(bool(_KIDNEY_VALUE.search(text) or _CLEARANCE.search(text)))
    assert len(values) <= 1, f"{case}: cards give kidney function as {values}"
    assert len(clearances) <= 1, f"{case}: cards give creatinine clearance as {clearances}"
    if unknown:
        assert not any(known) or values <= {"unknown"}, f"{case}: one card says unknown, another gives a value"


def _cards():
    for case in CASES:
        for card in _response(case)["cards"]:
            yield case, card


@pytest.mark.parametrize("case", CASES)
def test_sections_in_order_on_every_card(case):
    for card in _response(case)["cards"]:
        detail = _detail(card)
        found = [h for h in HEADINGS if re.search(rf"^{re.escape(h)}$", detail, re.M)]
        positions = [detail.index(f"{h}\n") for h in found]
        assert positions == sorted(positions), f"{case}: sections out of order: {found}"
        assert "**Assessment**" in found and "**Source**" in found, f"{case} {card['source']['topic']['code']}: {found}"
        assert detail.startswith(found[0]), f"{case}: text before the first section"
        if card["indicator"] in ("warning", "critical"):
            assert "**What to do**" in found, f"{case} {card['source']['topic']['code']}: no What to do"


def test_summaries_are_short():
    long = [(c, card["summary"]) for c, card in _cards() if len(card["summary"]) >= SUMMARY_MAX]
    assert long == []


def test_units_as_people_write_them():
    raw = [(c, m) for c, card in _cards()
           for m in re.findall(r"\{[A-Za-z0-9_.]+\}|\[[a-z_]+\]", card["summary"] + _detail(card))]
    assert raw == [], raw[:5]


def test_numbered_lists_start_at_one():
    for c, card in _cards():
        in_list = False  # a numbered list goes on across its indented sub-lines
        for line in _detail(card).split("\n"):
            m = re.match(r"^(\d+)\. ", line)
            if m and not in_list:
                assert m.group(1) == "1", f"{c}: list starts at {m.group(1)}: {line}"
            in_list = bool(m) or (in_list and line.startswith(" "))


def test_never_measured_only_when_nothing_was_measured():
    """'never measured' / 'no magnesium result in the record' only for a patient whose record holds no usable
    serum magnesium within the lookback (an older result is 'last measured on DATE (N days ago, ...)')."""
    knowledge = load_knowledge()
    codes = {c.code for c in knowledge.model.analytes["magnesium"].codes}
    lookback = timedelta(days=float(knowledge.policy("lookback_days")))
    said = 0
    for s in list_scenarios():
        measured = [r for r in _observations(s) if r.get("status") not in ("entered-in-error", "cancelled")
                    and any(c.get("code") in codes for c in (r.get("code") or {}).get("coding", []))
                    and (parse_fhir_datetime(r.get("effectiveDateTime")) or FIXED_NOW) >= FIXED_NOW - lookback]
        for h in HOOKS:
            for card in _response(f"{s.id}.{h}")["cards"]:
                text = card["summary"] + "\n" + _detail(card)
                if re.search(r"never measured|no magnesium result", text, re.I):
                    said += 1
                    assert not measured, f"{s.id}.{h}: 'never measured' but {measured[0]['id']} exists"
    assert said > 0  # the wording is shown by at least one fixture


def _observations(scenario) -> list[dict]:
    return [e["resource"] for e in read_bundle(scenario)["entry"] if e["resource"]["resourceType"] == "Observation"]


def test_every_result_line_shows_the_age_of_its_value():
    """Issue 10, time: a value stated as a result (its own line with an Observation reference, or a formula input)
    carries its age: 'on 2026-11-20 (5 days ago)', 'today', never a bare date."""
    bare = []
    for c, card in _cards():
        for line in _detail(card).split("\n"):
            if not re.search(r"\bObservation/", line) or not re.search(r"\bon \d{4}-\d{2}-\d{2}\b", line):
                continue
            for m in re.finditer(r"\bon (\d{4}-\d{2}-\d{2})\b", line):
                if not re.match(r"\*{0,2} \((today|1 day ago|\d+ days ago)", line[m.end():]):
                    bare.append((c, line.strip()[:160]))
    assert bare == [], bare[:5]


def test_every_test_a_card_orders_is_named_in_its_text():
    """A suggestion never orders a test the card's text does not name (e.g. the FEMg card's same-day serum
    creatinine): the clinician sees why each order is there."""
    unnamed = []
    checked = 0
    for case, card in _cards():
        text = (card["summary"] + "\n" + _detail(card)).lower()
        for suggestion in card.get("suggestions") or []:
            for action in suggestion["actions"]:
                m = re.fullmatch(r"Order (.+) \(LOINC [0-9-]+\)", action["description"])
                if m is None:
                    continue
                checked += 1
                name = m.group(1).lower()
                # "spot urine creatinine" is named by "urine creatinine"; "serum magnesium" by "magnesium", but never by
                # the "magnesium" of "urine magnesium"
                serum = name.removeprefix("serum ")
                if not (name.removeprefix("spot ") in text or re.search(rf"(?<!urine ){re.escape(serum)}", text)):
                    unnamed.append((case, card["source"]["topic"]["code"], name))
    assert checked >= 50, checked  # the fixtures order tests on many cards
    assert unnamed == []
