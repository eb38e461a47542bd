"""The ``cds-service`` command: serve, invoke, and the tool groups (audit, fixtures)."""
from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from .config import Settings


def _parse_now(value: str | None) -> datetime | None:
    if not value:
        return None
    from .record.dates import parse_fhir_datetime

    dt = parse_fhir_datetime(value)
    if dt is None:
        raise click.BadParameter(f"not an ISO date/time: {value}")
    return dt


@click.group()
@click.version_option(package_name="cds-service")
def main() -> None:
    """CDS Hooks 2.0 service for refractory hypomagnesemia."""


@main.command()
@click.option("--host", default=None, help="Bind address (default CDS_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default CDS_PORT or 8080).")
@click.option("--workers", default=None, type=int, help="gunicorn workers (default CDS_WORKERS or 2).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the service under gunicorn (production WSGI server)."""
    from gunicorn.app.base import BaseApplication

    settings = Settings.from_env(host=host, port=port, workers=workers)
    from .app import create_app

    class _App(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 4)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", "-")
            # no query strings or headers in the access log (tokens, PHI)
            self.cfg.set("access_log_format", '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms')

        def load(self) -> Any:
            return create_app({"SETTINGS": settings})

    _App().run()


@main.command()
@click.argument("request_file", type=click.File("rb"))
@click.option("--service", "service_id", default=None, help="Service id (default: from the request's hook).")
@click.option("--now", default=None, help="Evaluate as of this instant (ISO 8601), for reproducible output.")
@click.option("--database-url", default="sqlite://", show_default=True, help="Audit store for this run (in-memory by default).")
def invoke(request_file: Any, service_id: str | None, now: str | None, database_url: str) -> None:
    """Run one hook request in-process and print the response JSON (no server needed)."""
    from .app import create_app

    raw = request_file.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise click.ClickException(f"{request_file.name} is not JSON: {exc}")
    fixed = _parse_now(now)
    config: dict[str, Any] = {"database_url": database_url, "log_level": "WARNING"}
    if fixed:
        config["CLOCK"] = lambda: fixed
    app = create_app(config)
    services = app.extensions["cds"]
    if service_id is None:
        hook = body.get("hook") if isinstance(body, dict) else None
        matches = [s.id for s in services.catalog.services.values() if s.hook == hook]
        if not matches:
            raise click.ClickException(f"no service answers hook {hook!r}; give --service")
        service_id = matches[0]
    resp = app.test_client().post(f"/cds-services/{service_id}", data=raw, content_type="application/json")
    services.store.flush()
    click.echo(json.dumps(resp.get_json(), indent=2))
    if resp.status_code != 200:
        sys.exit(1)


if __name__ == "__main__":
    main()
