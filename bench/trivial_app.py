"""The comparison endpoint: a trivial Flask app answering POSTs with a fixed JSON body of a given size,
under gunicorn with the settings of `cds-service serve` (same worker class, workers, threads, access log).

    python -m bench.trivial_app --port 8099 --size 2400
"""
from __future__ import annotations

import argparse
import json

from flask import Flask, Response, request


def make_app(size: int) -> Flask:
    filler = "x" * max(0, size - len(json.dumps({"cards": [], "pad": ""})))
    body = json.dumps({"cards": [], "pad": filler}).encode()
    app = Flask(__name__)

    @app.post("/trivial")
    def trivial() -> Response:
        request.get_data()  # read the request body as the service does
        return Response(body, mimetype="application/json")

    @app.get("/trivial")
    def ready() -> Response:
        return Response(b"{}", mimetype="application/json")

    return app


def main() -> None:
    from cds_service.cli import run_gunicorn
    from cds_service.config import Settings

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    args = p.parse_args()
    run_gunicorn(lambda: make_app(args.size), Settings.from_env(host="127.0.0.1", port=args.port))


if __name__ == "__main__":
    main()
