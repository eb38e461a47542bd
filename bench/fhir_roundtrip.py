"""Response time of one patient-view call: full prefetch vs no prefetch (the service fetches from the FHIR server).

    CDS_TEST_FHIR_BASE=http://127.0.0.1:8089/fhir .venv/bin/python bench/fhir_roundtrip.py [--runs 25] [--scenario ID]

Loads the scenario into that FHIR server (idempotent), builds both requests with the EHR stand-in,
then times ``--runs`` POSTs of each through the in-process app (default settings: 2 s fetch
deadline, retries, the real FhirGateway over HTTP). Prints the median and quartiles of each.
``--service-url`` times a running service instead (HTTP both ways).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

from cds_service import create_app
from cds_service.config import Settings
from cds_service.fixtures import get_scenario, read_bundle
from cds_service.kit.loader import FixtureLoader
from cds_service.kit.standin import EhrStandIn

FIXTURES_TODAY = datetime(2026, 11, 25, 12, tzinfo=UTC)


def _time(standin: EhrStandIn, built, runs: int) -> list[float]:
    out = []
    standin.call(built)  # warm-up (connection pools, first imports)
    for _ in range(runs):
        t0 = time.perf_counter()
        result = standin.call(built)
        out.append((time.perf_counter() - t0) * 1000)
        if result.status != 200:
            raise SystemExit(f"HTTP {result.status}: {result.body}")
    return out


def _summary(name: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=4)
    return f"{name:<22} median {statistics.median(ms):7.1f} ms   p25 {q[0]:7.1f}   p75 {q[2]:7.1f}   n={len(ms)}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fhir-base", default=os.environ.get("CDS_TEST_FHIR_BASE"))
    ap.add_argument("--scenario", default="mg-refractory-01")
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--service-url", default=None)
    args = ap.parse_args(argv)
    if not args.fhir_base:
        ap.error("give --fhir-base or set CDS_TEST_FHIR_BASE")
    if args.runs < 20:
        ap.error("--runs must be at least 20")
    scenario = get_scenario(args.scenario)
    loader = FixtureLoader(args.fhir_base)
    loader.wait_for_metadata(30)
    loader.load(scenario.id, read_bundle(scenario))

    if args.service_url:
        standin = EhrStandIn(fhir_base=args.fhir_base, service_url=args.service_url)
        where = args.service_url
    else:
        tmp = tempfile.TemporaryDirectory(prefix="fhir-roundtrip-")
        settings = Settings.from_env(database_url=f"sqlite:///{tmp.name}/audit.sqlite3", auth_mode="off",
                                     allow_http_fhir=args.fhir_base.startswith("http://"))
        app = create_app(settings, clock=lambda: FIXTURES_TODAY)
        standin = EhrStandIn(fhir_base=args.fhir_base, app=app)
        where = "in-process app (default settings)"
    full = standin.build_request("patient-view", scenario.patient_id, prefetch=True)
    none = standin.build_request("patient-view", scenario.patient_id, prefetch=False)
    assert len(full.prefetched) == len(full.service["prefetch"]), full.not_prefetched

    print(f"patient-view, scenario {scenario.id}, FHIR {args.fhir_base}, service {where}")
    with_prefetch = _time(standin, full, args.runs)
    without = _time(standin, none, args.runs)
    print(_summary("full prefetch", with_prefetch))
    print(_summary("no prefetch (fetch)", without))
    print(f"median difference {statistics.median(without) - statistics.median(with_prefetch):.1f} ms "
          f"(the {len(full.service['prefetch'])} parallel FHIR searches)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
