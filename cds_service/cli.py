"""The ``cds-service`` command: serve, invoke, and the tool groups (audit, fixtures)."""
from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from .config import Settings
from .definitions import HOOKS


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


def run_gunicorn(build: Any, settings: Settings, preflight: Any = None) -> None:
    """Serve the WSGI app that ``build()`` returns (called in each worker) under gunicorn with our settings.

    The benchmark's trivial endpoint runs through this too, so both are measured under the same server."""
    from gunicorn.app.base import BaseApplication

    from .serving import apply_gunicorn_settings

    class _App(BaseApplication):
        def load_config(self) -> None:
            from .workers import gunicorn_options

            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            for name, value in gunicorn_options(settings).items():  # worker model and slow-client bounds
                self.cfg.set(name, value)
            self.cfg.set("accesslog", "-")
            # no query strings or headers in the access log (tokens, PHI)
            self.cfg.set("access_log_format", '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms')
            apply_gunicorn_settings(self.cfg, settings, preflight)  # logs, control socket, ready line, metrics

        def load(self) -> Any:
            return build()

    from .api import server_errors

    server_errors.install()  # gunicorn's own 400/414/431 answers as OperationOutcomes (issue 12)
    _App().run()


@main.command()
@click.option("--host", default=None, help="Bind address (default CDS_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default CDS_PORT or 8080).")
@click.option("--workers", default=None, type=int, help="gunicorn workers (default CDS_WORKERS or the number of CPUs).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the service under gunicorn (production WSGI server)."""
    from os import environ  # production default: client authentication required unless CDS_AUTH_MODE says otherwise

    try:
        settings = Settings.from_env(host=host, port=port, workers=workers,
                                     auth_mode=None if "CDS_AUTH_MODE" in environ else "required")
    except ValueError as exc:
        click.echo(f"cds-service serve: {exc}. Fix: correct that variable (README, Configuration)", err=True)
        sys.exit(2)
    found = _serve_preflight(settings)
    if not settings.evidence_key:  # one key for every worker (made before they fork); links end at a restart
        from .api.evidence_page import random_key
        from .serving import log as serve_log

        settings = settings.with_overrides(evidence_key=random_key())
        serve_log.info("CDS_EVIDENCE_KEY is not set: evidence links use a random key and stop working at a restart "
                       "(set one shared key for several instances)")
    from .app import create_app, settle_heap

    def build() -> Any:
        app = create_app(settings)
        settle_heap()
        return app

    run_gunicorn(build, settings, found)


def _serve_preflight(settings: Settings) -> Any:
    """Check the configuration before gunicorn starts: a problem is one line with its fix, and exit 2."""
    from . import logs

    logs.configure(settings.log_level, settings.log_format)
    from .serving import EXIT_CONFIG, PreflightError, log, preflight, prepare_metrics_dir, remove_metrics_dir, warn_if_open

    prepare_metrics_dir()  # before anything imports prometheus_client
    try:
        found = preflight(settings)
    except PreflightError as exc:
        log.error("cannot start: %s", exc)
        remove_metrics_dir()
        sys.exit(EXIT_CONFIG)
    warn_if_open(settings)
    return found


@main.command()
@click.argument("request_file", type=click.File("rb"), required=False)
@click.option("--service", "service_id", default=None, help="Service id (default: the one answering the hook).")
@click.option("--now", default=None, help="In-process only: evaluate as of this instant (ISO 8601), for reproducible output.")
@click.option("--database-url", default="sqlite://", show_default=True, help="In-process audit store for this run (in-memory by default).")
@click.option("--hook", type=click.Choice(HOOKS), default=None,
              help="EHR stand-in mode: the hook to call (needs --patient and --fhir-base).")
@click.option("--patient", "patient_id", default=None, help="Stand-in: context.patientId.")
@click.option("--fhir-base", default=None, help="Stand-in: the FHIR server the EHR reads (prefetch) and hands the service.")
@click.option("--service-fhir-base", default=None,
              help="Stand-in: fhirServer as the service reaches it, when that differs from --fhir-base "
                   "(e.g. http://hapi:8080/fhir in compose).")
@click.option("--draft-orders", "draft_orders_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Stand-in: draft orders (a Bundle or one resource, JSON) for order-select/order-sign.")
@click.option("--selection", "selections", multiple=True, help="Stand-in, order-select: a selected draft order (Type/id); default all.")
@click.option("--user", "user_id", default="Practitioner/example", show_default=True, help="Stand-in: context.userId.")
@click.option("--encounter", "encounter_id", default=None, help="Stand-in: context.encounterId.")
@click.option("--no-prefetch", is_flag=True, help="Stand-in: send no prefetch, only fhirServer + fhirAuthorization (the service fetches).")
@click.option("--prefetch-only", is_flag=True, help="Stand-in: send prefetch without fhirServer/fhirAuthorization.")
@click.option("--fhir-token", default=None,
              help="Stand-in: bearer token for the FHIR server (sent as fhirAuthorization; random by default).")
@click.option("--sign-with", "key_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Stand-in: sign a client JWT with this PEM private key (EC -> ES384, RSA -> RS384).")
@click.option("--issuer", default=None, help="Stand-in: JWT iss (and sub) when signing.")
@click.option("--kid", default=None, help="Stand-in: JWT kid header when signing.")
@click.option("--jku", default=None, help="Stand-in: optional JWT jku header.")
@click.option("--service-url", default=None, help="Stand-in: base URL of a running service (default: the app in-process).")
@click.option("--json", "as_json", is_flag=True, help="Stand-in: print the response JSON instead of the card table.")
@click.option("--request-only", is_flag=True, help="Stand-in: print the built request JSON and do not call the service.")
def invoke(request_file: Any, service_id: str | None, now: str | None, database_url: str, hook: str | None,
           patient_id: str | None, fhir_base: str | None, service_fhir_base: str | None, draft_orders_file: str | None,
           selections: tuple[str, ...],
           user_id: str, encounter_id: str | None, no_prefetch: bool, prefetch_only: bool, fhir_token: str | None,
           key_file: str | None, issuer: str | None, kid: str | None, jku: str | None, service_url: str | None,
           as_json: bool, request_only: bool) -> None:
    """Call a CDS service and print what came back.

    \b
    Two modes:
      cds-service invoke REQUEST.json
          runs one ready hook request in-process and prints the response JSON (no server needed);
      cds-service invoke --hook patient-view --patient ID --fhir-base URL [...]
          EHR stand-in: reads discovery, builds the request (prefetch rendered from the service's
          templates and read from that FHIR server, unless --no-prefetch), optionally signs a
          client JWT, calls --service-url or the app in-process, prints the cards as a table
          (or the response JSON with --json).
    """
    if request_file is not None:
        if hook or patient_id or fhir_base:
            raise click.UsageError("give either REQUEST_FILE or --hook/--patient/--fhir-base, not both")
    elif not (hook and patient_id and fhir_base):
        raise click.UsageError("give REQUEST_FILE, or --hook, --patient and --fhir-base (EHR stand-in mode)")
    if no_prefetch and prefetch_only:
        raise click.UsageError("--no-prefetch and --prefetch-only contradict each other")
    if key_file and not (issuer and kid):
        raise click.UsageError("--sign-with needs --issuer and --kid")
    from .kit.standin import BuiltRequest, EhrStandIn, StandInError, cards_table, read_draft_orders, sign_client_jwt

    signer = None
    if key_file:
        def signer(audience: str) -> str:
            return sign_client_jwt(key_file, issuer=issuer, kid=kid, jku=jku, audience=audience)  # type: ignore[arg-type]
    if service_url and now:
        click.echo("note: --now only applies in-process; the running service uses its own clock", err=True)
    body = _read_request_file(request_file) if request_file is not None else None
    if body is not None:  # the file's fhirServer is the one the service is told to read: same http policy as --fhir-base
        named = body.get("fhirServer")
        fhir_base = named if isinstance(named, str) and named.startswith(("http://", "https://")) else "https://unused.invalid"
        hook = body.get("hook") if isinstance(body.get("hook"), str) else None
    standin = None
    try:
        if service_url:
            standin = EhrStandIn(fhir_base=fhir_base, service_url=service_url, fhir_token=fhir_token, signer=signer,  # type: ignore[arg-type]
                                 service_fhir_base=service_fhir_base)
        else:
            standin = EhrStandIn(fhir_base=fhir_base, app=_in_process_app(now, database_url, service_fhir_base or fhir_base),  # type: ignore[arg-type]
                                 fhir_token=fhir_token, signer=signer, service_fhir_base=service_fhir_base)
        if body is not None:
            if not hook:
                raise StandInError(f"{request_file.name}: no \"hook\" in the request; give --service")
            built = BuiltRequest(standin.service_for(hook, service_id), body)
            what = request_file.name
        else:
            standin.check_fhir_base()
            drafts = read_draft_orders(draft_orders_file) if draft_orders_file else None
            built = standin.build_request(hook, patient_id, service_id=service_id, user_id=user_id, encounter_id=encounter_id,  # type: ignore[arg-type]
                                          draft_orders=drafts, selections=selections, prefetch=not no_prefetch,
                                          send_fhir_server=not prefetch_only)
            for key, why in built.not_prefetched.items():
                click.echo(f"note: prefetch {key} not sent: {why} (FHIR server {standin.fhir_base})", err=True)
            what = f"patient {patient_id}, " + ("no prefetch (service fetches)" if no_prefetch
                                                else f"prefetch {len(built.prefetched)} key(s)")
        if request_only:
            click.echo(json.dumps(built.body, indent=2))
            return
        result = standin.call(built)
    except StandInError as exc:
        raise click.ClickException(str(exc) + (_unauthorized_hint(bool(signer)) if exc.status == 401 else "")) from exc
    finally:
        if not service_url and standin is not None:
            from .services import get_services

            get_services(standin.app).store.flush()
    if as_json:
        click.echo(json.dumps(result.body, indent=2))
    else:
        click.echo(f"{built.service['id']} ({built.service.get('hook')}) {what}: HTTP {result.status} "
                   f"in {result.elapsed_ms:.0f} ms")
        if result.status == 200 and isinstance(result.body, dict):
            click.echo(cards_table(result.body.get("cards") or []))
        else:
            click.echo(json.dumps(result.body, indent=2))
    if result.status == 401:
        click.echo("error: HTTP 401 from " + result.url + _unauthorized_hint(bool(signer)), err=True)
    if result.status != 200:
        sys.exit(1)


def _unauthorized_hint(signed: bool) -> str:
    if signed:
        return ("; the service refused the signed JWT: check that --issuer and --kid are in its "
                "CDS_TRUSTED_ISSUERS_FILE with this key's public part, and that it is reached at the URL it expects "
                "(CDS_PUBLIC_BASE_URL); its log says why")
    return ("; the service requires a signed client JWT: add --sign-with KEY.pem --issuer ISS --kid KID (an issuer in "
            "its CDS_TRUSTED_ISSUERS_FILE), or run it with CDS_AUTH_MODE=off (development only)")


def _read_request_file(request_file: Any) -> dict[str, Any]:
    raw = request_file.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise click.ClickException(f"{request_file.name} is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise click.ClickException(f"{request_file.name} is not a hook request (a JSON object)")
    return body


def _in_process_app(now: str | None, database_url: str, fhir_base: str) -> Any:
    from . import logs
    from .app import create_app

    # allow_http_fhir: the stand-in names this server explicitly (None leaves CDS_ALLOW_HTTP_FHIR as it is)
    settings = Settings.from_env(database_url=database_url, log_level="WARNING",
                                 allow_http_fhir=True if fhir_base.startswith("http://") else None)
    logs.configure(settings.log_level, settings.log_format)
    fixed = _parse_now(now)
    return create_app(settings, clock=(lambda: fixed) if fixed else None)


from .audit.cli import audit  # noqa: E402

main.add_command(audit)


FIXTURES_DIR_HELP = "Fixture directory (default CDS_FIXTURES_DIR, else the checkout's or the installed package's fixtures/)."


@main.group()
def fixtures() -> None:
    """The scenario patients (fixtures/): load them into a FHIR sandbox, list them, write ready requests."""


@fixtures.command("load")
@click.option("--fhir-base", required=True, help="FHIR R4 base URL, e.g. http://localhost:8090/fhir.")
@click.option("--wait", "wait_seconds", default=0.0, type=float, show_default=True,
              help="Seconds to wait for GET /metadata before giving up (a starting server).")
@click.option("--scenario", "scenario_ids", multiple=True, help="Load only this scenario (repeatable; default all).")
@click.option("--fhir-token", default=None, help="Bearer token, for a sandbox that requires one.")
@click.option("--individual-puts", is_flag=True, help="One PUT per resource even when the server supports transactions.")
@click.option("--fixtures-dir", default=None, help=FIXTURES_DIR_HELP)
def fixtures_load(fhir_base: str, wait_seconds: float, scenario_ids: tuple[str, ...], fhir_token: str | None,
                  individual_puts: bool, fixtures_dir: str | None) -> None:
    """PUT every scenario's transaction bundle (stable ids: loading twice changes nothing)."""
    from .fixtures import FixtureError, get_scenario, list_scenarios, read_bundle
    from .kit.loader import FixtureLoader, LoadError

    try:
        scenarios = ([get_scenario(s, fixtures_dir) for s in scenario_ids] if scenario_ids
                     else list_scenarios(fixtures_dir))
        bundles = [(s.id, read_bundle(s)) for s in scenarios]
    except FixtureError as exc:
        raise click.ClickException(str(exc)) from exc
    loader = FixtureLoader(fhir_base, token=fhir_token, log=lambda m: click.echo(m, err=True))
    try:
        loader.wait_for_metadata(wait_seconds)
        version = loader.fhir_version()
        if not version.startswith("4.0"):
            click.echo(f"warning: the server says fhirVersion {version!r}; the fixtures are FHIR R4 (4.0.x)", err=True)
        transaction = loader.supports_transaction() and not individual_puts
        if not transaction and not individual_puts:
            click.echo("the server does not declare the transaction interaction: loading with individual PUTs", err=True)
        total = 0
        for sid, bundle in bundles:
            done = loader.load(sid, bundle, transaction=transaction)
            total += done.total
            click.echo(done.describe())
    except LoadError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"loaded {len(bundles)} scenario(s), {total} resources into {loader.base}")


@fixtures.command("list")
@click.option("--fixtures-dir", default=None, help=FIXTURES_DIR_HELP)
def fixtures_list(fixtures_dir: str | None) -> None:
    """Each scenario: patient id, draft orders, and the cards each hook is expected to return."""
    from .fixtures import FixtureError, list_scenarios

    try:
        scenarios = list_scenarios(fixtures_dir)
    except FixtureError as exc:
        raise click.ClickException(str(exc)) from exc
    for s in scenarios:
        click.echo(f"{s.id}  patient={s.patient_id}  drafts={s.drafts_path.name if s.drafts_path else '-'}")
        for hook, codes in s.expected.items():
            click.echo(f"    {hook:<13} {', '.join(sorted(codes)) or '(no cards)'}")


@fixtures.command("requests")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory to (re)write.")
@click.option("--now", default="2026-11-25T12:00:00Z", show_default=True, help="The fixtures' today (lookback window).")
@click.option("--fixtures-dir", default=None, help=FIXTURES_DIR_HELP)
def fixtures_requests(out_dir: str, now: str, fixtures_dir: str | None) -> None:
    """Write a ready hook request per scenario and hook, with and without prefetch (for curl)."""
    from .definitions import load_definitions
    from .fixtures import FixtureError, write_requests
    from .knowledge import load_knowledge

    settings = Settings.from_env()
    catalog = load_definitions(settings.hooks_dir, load_knowledge(settings.knowledge_dir or None))
    try:
        written = write_requests(out_dir, catalog, _parse_now(now), fixtures_dir)  # type: ignore[arg-type]
    except FixtureError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {len(written)} request(s) to {out_dir}")


if __name__ == "__main__":
    main()
