"""Run the benchmark suite and write bench/out/REPORT.md and bench/out/report.png.

    .venv/bin/python -m bench.run            # full run (~3 minutes)
    .venv/bin/python -m bench.run --quick    # smoke-sized (CI): same sections, tiny sizes and durations
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

from . import http_load, noprefetch, report, scaling

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke-sized run (seconds, not minutes)")
    p.add_argument("--out", type=Path, default=OUT, help="output directory (default bench/out)")
    p.add_argument("--skip", action="append", default=[], choices=["http", "noprefetch"], help="leave a section out")
    p.add_argument("--sizes", default=None, help="comma-separated Observation counts for section 1 (default 10,100,1000,5000)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per concurrency level in section 2")
    p.add_argument("--before", type=Path, default=None, help="a results.json of an earlier run to show as 'before'")
    args = p.parse_args(argv)
    notes = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else ((10, 100) if args.quick else scaling.SIZES)

    print(f"1. scaling {sizes} ...", file=sys.stderr)
    rows = scaling.measure(sizes, quick=args.quick)
    http = nopf = None
    if "http" not in args.skip:
        print("2+4. HTTP under gunicorn, start-up, memory ...", file=sys.stderr)
        http = http_load.measure(seconds=args.seconds, quick=args.quick)
    if "noprefetch" not in args.skip:
        print("3. no prefetch ...", file=sys.stderr)
        try:
            nopf = noprefetch.measure(quick=args.quick)
        except Exception as exc:  # the FHIR server is an outside part: report, do not hide
            traceback.print_exc()
            nopf = noprefetch.NoPrefetchResult(server=os.environ.get("CDS_TEST_FHIR_BASE", "private"), observations_loaded=0,
                                               runs=0, error=f"{type(exc).__name__}: {exc}")
    before = None
    if args.before and args.before.exists():
        before = [scaling.ScalingRow(**r) for r in json.loads(args.before.read_text())["scaling"]]
    cmd = "python -m bench.run" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    path = report.write(args.out, command=cmd.strip(), scaling=rows, http=http, nopf=nopf, notes=notes, before=before)
    (args.out / "results.json").write_text(json.dumps({
        "scaling": [asdict(r) for r in rows],
        "http": asdict(http) if http else None,
        "noprefetch": asdict(nopf) if nopf else None,
    }, indent=1, default=str))
    print(path.read_text().split("## 1.")[0])
    print(f"wrote {path} and {args.out / 'report.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
