"""Alert burden: cards per 100 chart openings (patient-view), by rule and indicator.

Every generated patient in ``../shared/data/synthea-r4/`` (one chart opening each, on the day after their last
laboratory result the service reads, so that their labs fall inside the lookback) and every fixture scenario
(one opening each, on the fixtures' day) is sent through the real HTTP layer of the patient-view service.

    .venv/bin/python -m bench.burden                 # Markdown tables on stdout
    .venv/bin/python -m bench.burden --json out.json # the counts as JSON as well

This is a count, not a timing: the same code and data always give the same figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIXTURES_TODAY = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # the fixtures' "today" (fixtures/README.md)
SERVICE = "magnesium-patient-view"
# The budget the README states: cards per 100 chart openings on the generated patients (none has a magnesium
# result, none has a magnesium problem the record can show). See README "Alert burden".
BUDGET_PER_100 = 15.0


def synthea_dir() -> Path:
    """CDS_SYNTHEA_DIR, else shared/ beside the repository (as CI and the workplace lay it out)."""
    configured = os.environ.get("CDS_SYNTHEA_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "data" / "synthea-r4"


@dataclass
class Opening:
    """One chart opening: who, when, and the cards the service answered with."""

    population: str  # "generated" | "fixtures"
    patient_id: str
    now: datetime
    cards: list[dict[str, Any]]


@dataclass
class Burden:
    """Counts over a set of openings."""

    openings: int = 0
    with_card: int = 0
    cards: Counter = field(default_factory=Counter)  # (rule, indicator) -> cards

    @property
    def total(self) -> int:
        return sum(self.cards.values())

    def per_100(self, n: int | None = None) -> float:
        return 100.0 * (self.total if n is None else n) / self.openings if self.openings else 0.0

    @property
    def share_with_card(self) -> float:
        return 100.0 * self.with_card / self.openings if self.openings else 0.0

    def add(self, opening: Opening) -> None:
        self.openings += 1
        self.with_card += bool(opening.cards)
        for c in opening.cards:
            self.cards[(c["source"]["topic"]["code"], c["indicator"])] += 1


def _client(clock: dict[str, datetime], db_dir: str):
    from cds_service import create_app
    from cds_service.config import Settings

    app = create_app(Settings.from_env(database_url=f"sqlite:///{db_dir}/burden.sqlite3", auth_mode="off", allow_http_fhir=True),
                     clock=lambda: clock["now"])
    app.config["TESTING"] = True
    return app, app.test_client()


def _open_chart(client, catalog, resources: list[dict[str, Any]], patient_id: str, now: datetime,
                hook_instance: str) -> list[dict[str, Any]]:
    from cds_service.fixtures import chart_request

    body = chart_request(resources, "patient-view", catalog, now, hook_instance)
    resp = client.post(f"/cds-services/{SERVICE}", json=body)
    if resp.status_code != 200:
        raise RuntimeError(f"{patient_id}: HTTP {resp.status_code}: {resp.get_data(as_text=True)[:300]}")
    return resp.get_json()["cards"]


def chart_openings(synthea: Path | None = None, *, fixtures: bool = True) -> Iterable[Opening]:
    """Open every generated patient's chart and (if ``fixtures``) every fixture scenario's, through patient-view."""
    from cds_service.fixtures import day_after_last_lab, list_scenarios, read_bundle, stored_resources
    from cds_service.services import get_services

    synthea = synthea or synthea_dir()
    files = sorted(synthea.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no generated patients in {synthea}")
    clock = {"now": FIXTURES_TODAY}
    with tempfile.TemporaryDirectory(prefix="cds-burden-") as tmp:
        app, client = _client(clock, tmp)
        try:
            cds = get_services(app)
            catalog, loinc = cds.catalog, set(cds.knowledge.loinc_to_analyte)
            for path in files:
                resources = stored_resources(json.loads(path.read_text(encoding="utf-8")))
                patient = next(r for r in resources if r["resourceType"] == "Patient")
                clock["now"] = day_after_last_lab(resources, loinc) or FIXTURES_TODAY
                cards = _open_chart(client, catalog, resources, patient["id"], clock["now"], f"burden-{patient['id']}")
                yield Opening("generated", patient["id"], clock["now"], cards)
            if fixtures:
                clock["now"] = FIXTURES_TODAY
                for s in list_scenarios():
                    resources = stored_resources(read_bundle(s))
                    cards = _open_chart(client, catalog, resources, s.patient_id, FIXTURES_TODAY, f"burden-{s.id}")
                    yield Opening("fixtures", s.patient_id, FIXTURES_TODAY, cards)
        finally:
            cds.store.close()


def measure(synthea: Path | None = None, *, fixtures: bool = True) -> dict[str, Burden]:
    """Burden per population ("generated", "fixtures")."""
    out: dict[str, Burden] = {"generated": Burden(), "fixtures": Burden()} if fixtures else {"generated": Burden()}
    for opening in chart_openings(synthea, fixtures=fixtures):
        out[opening.population].add(opening)
    return out


def markdown(burdens: dict[str, Burden]) -> str:
    """One table per population: cards per 100 chart openings by rule and indicator, then totals."""
    where = synthea_dir()
    shown = f"../{where.relative_to(REPO.parent)}" if where.is_relative_to(REPO.parent) else str(where)
    titles = {"generated": f"Generated patients ({shown})", "fixtures": "Fixture scenarios (fixtures/scenarios.yaml)"}
    parts: list[str] = []
    for name, b in burdens.items():
        parts += [f"### {titles.get(name, name)}", "",
                  f"{b.openings} chart openings (patient-view), {b.total} cards: **{b.per_100():.1f} cards per 100 "
                  f"openings**; {b.with_card} openings ({b.share_with_card:.0f} %) got at least one card.", "",
                  "| rule | indicator | cards | per 100 openings |", "|---|---|---:|---:|"]
        for (rule, indicator), n in sorted(b.cards.items(), key=lambda kv: (-kv[1], kv[0])):
            parts.append(f"| `{rule}` | {indicator} | {n} | {b.per_100(n):.1f} |")
        if not b.cards:
            parts.append("| (none) | | 0 | 0.0 |")
        parts.append("")
    gen = burdens.get("generated")
    if gen is not None:
        verdict = "within" if gen.per_100() <= BUDGET_PER_100 else "OVER"
        parts.append(f"Budget: at most {BUDGET_PER_100:g} cards per 100 openings on the generated patients: "
                     f"{gen.per_100():.1f}, {verdict} budget.")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.burden", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthea", type=Path, default=None, help="folder of generated FHIR bundles (default ../shared/data/synthea-r4)")
    p.add_argument("--no-fixtures", action="store_true", help="generated patients only")
    p.add_argument("--json", type=Path, default=None, help="also write the counts as JSON here")
    args = p.parse_args(argv)
    burdens = measure(args.synthea, fixtures=not args.no_fixtures)
    sys.stdout.write(markdown(burdens))
    if args.json:
        counts = {name: {"openings": b.openings, "withCard": b.with_card, "cards": b.total, "per100": round(b.per_100(), 2),
                         "byRule": [{"rule": r, "indicator": i, "cards": n} for (r, i), n in sorted(b.cards.items())]}
                  for name, b in burdens.items()}
        args.json.write_text(json.dumps(counts, indent=2) + "\n")
    gen = burdens["generated"]
    return 0 if gen.per_100() <= BUDGET_PER_100 else 1


if __name__ == "__main__":
    raise SystemExit(main())
