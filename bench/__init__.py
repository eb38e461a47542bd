"""Benchmark suite (issue 7): `python -m bench.run [--quick]` writes bench/out/REPORT.md and report.png."""
