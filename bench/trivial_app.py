"""The comparison endpoint: a trivial Flask app answering POSTs with a fixed JSON body of a given size,
under gunicorn with the settings of `cds-service serve` (same worker class, workers, threads, access log).

    python -m bench.trivial_app --port 8099 --size 2400
"""
from __future__ import annotations

import argparse
import json
from typing import Any

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
    from gunicorn.app.base import BaseApplication

    from cds_service.config import Settings

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    args = p.parse_args()
    settings = Settings.from_env(port=args.port)

    class _App(BaseApplication):
        def load_config(self) -> None:  # keep in step with cds_service/cli.py serve
            self.cfg.set("bind", f"127.0.0.1:{args.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 4)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", "-")
            self.cfg.set("access_log_format", '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms')

        def load(self) -> Any:
            return make_app(args.size)

    _App().run()


if __name__ == "__main__":
    main()
