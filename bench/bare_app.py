"""The peer endpoint: a bare Flask app that `json.loads` the request body and returns one fixed card, under
gunicorn with exactly the settings of `cds-service serve` (same worker model, workers, threads, timeouts).

    python -m bench.bare_app --port 8098
"""
from __future__ import annotations

import argparse
import json

from flask import Flask, Response, request

CARD = {"cards": [{"uuid": "00000000-0000-4000-8000-000000000000", "summary": "Low magnesium: 1.3 mg/dL (2026-11-25)",
                   "indicator": "warning", "detail": "Serum magnesium 1.3 mg/dL is below the reference range.",
                   "source": {"label": "Bare peer", "topic": {"code": "hypomagnesemia"}}}]}


def make_app() -> Flask:
    body = json.dumps(CARD).encode()
    app = Flask(__name__)

    @app.post("/cds-services/<service_id>")
    def call(service_id: str) -> Response:
        json.loads(request.get_data())
        return Response(body, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app


def main() -> None:
    from cds_service.cli import run_gunicorn
    from cds_service.config import Settings

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    run_gunicorn(make_app, Settings.from_env(host="127.0.0.1", port=args.port))


if __name__ == "__main__":
    main()
