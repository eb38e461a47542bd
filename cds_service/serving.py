"""What ``cds-service serve`` does around gunicorn: a pre-flight check of the configuration (one line with
the fix, exit 2), one log format, the metrics directory and port, the ready line.

The gunicorn runner itself (workers, worker class, timeouts) is ``cli.run_gunicorn``; it calls
:func:`apply_gunicorn_settings` once with its config object.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audit.database import masked_url
from .config import Settings

log = logging.getLogger("cds_service.serve")
log.setLevel(logging.INFO)  # the ready line and start-up errors print whatever CDS_LOG_LEVEL says
EXIT_CONFIG = 2  # the configuration is wrong: fix it, do not restart in a loop
READY_FLAG = "cds-ready"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # also in metrics.py, which must not be imported before it is set


class PreflightError(Exception):
    """One misconfiguration: what is wrong and how to fix it, on one line."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem, self.fix = problem, fix


@dataclass
class Preflight:
    """What the check found, for the ready line."""

    settings: Settings
    knowledge_version: str = ""
    services: tuple[str, ...] = ()
    issuers: int = 0
    database: str = ""


def one_line(text: Any, limit: int = 400) -> str:
    s = re.sub(r"\s*\n\s*", "; ", str(text)).strip()
    return s if len(s) <= limit else s[: limit - 3] + "..."


def preflight(settings: Settings) -> Preflight:
    """Everything a worker would trip over at boot, checked once before gunicorn starts."""
    from .definitions import load_definitions
    from .errors import ConfigurationError
    from .knowledge import load_knowledge

    found = Preflight(settings)
    try:
        knowledge = load_knowledge(settings.knowledge_dir or None)
    except (ConfigurationError, OSError, ValueError) as exc:
        raise PreflightError(f"CDS_KNOWLEDGE_DIR={settings.knowledge_dir or '(packaged)'}: {one_line(exc)}",
                             "point CDS_KNOWLEDGE_DIR at a directory with knowledge.yaml, drugs.yaml and the RxNorm "
                             "CSV, or unset it to use the packaged knowledge") from None
    found.knowledge_version = knowledge.version
    hooks = Path(settings.hooks_dir)
    if not hooks.is_dir():
        raise PreflightError(f"CDS_HOOKS_DIR={settings.hooks_dir} is not a directory",
                             "set CDS_HOOKS_DIR to the directory of service definitions (the repository's hooks/, "
                             "/app/hooks in the image)")
    try:
        catalog = load_definitions(hooks, knowledge)
    except ConfigurationError as exc:
        raise PreflightError(f"CDS_HOOKS_DIR={settings.hooks_dir}: {one_line(exc)}",
                             "correct the definition named above, or point CDS_HOOKS_DIR at the repository's hooks/") from None
    found.services = tuple(sorted(catalog.services))
    found.issuers = _check_auth(settings)
    found.database = _check_database(settings.database_url)
    _check_port(settings.host, settings.port, "--port N or CDS_PORT")
    if settings.metrics_port:
        if settings.metrics_port == settings.port:
            raise PreflightError(f"CDS_METRICS_PORT={settings.metrics_port} is the service port",
                                 "give the metrics another port, or 0 to serve /metrics on the service port")
        _check_port(settings.host, settings.metrics_port, "CDS_METRICS_PORT")
    return found


def _check_auth(settings: Settings) -> int:
    from .auth import _check_algorithms, load_trusted_issuers
    from .errors import ConfigurationError

    if settings.auth_mode == "off":
        return 0
    if not settings.trusted_issuers_file:
        raise PreflightError(f"CDS_AUTH_MODE={settings.auth_mode} needs CDS_TRUSTED_ISSUERS_FILE (the EHRs allowed to "
                             "call, see docs/security.md)",
                             "set CDS_TRUSTED_ISSUERS_FILE=issuers.yaml, or CDS_AUTH_MODE=off for development only")
    try:
        _check_algorithms(settings)
        return len(load_trusted_issuers(settings.trusted_issuers_file))
    except ConfigurationError as exc:
        raise PreflightError(one_line(exc), "correct the file (format in docs/security.md)") from None


def _check_database(url: str) -> str:
    """Connect and bring the schema to head once (workers then find it done)."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from .audit.database import make_engine
    from .audit.migrate import upgrade

    shown = masked_url(url)
    fix = ("set CDS_DATABASE_URL to sqlite:///PATH (a writable directory) or "
           "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB, and check that the server is up")
    try:
        engine = make_engine(url)
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError) as exc:
        raise PreflightError(f"CDS_DATABASE_URL={shown} is not a database URL the service can use ({one_line(exc, 200)})",
                             fix) from None
    folder = os.path.dirname(os.path.abspath(engine.url.database or "")) if engine.url.get_backend_name() == "sqlite" else ""
    if folder and not (engine.url.database or ":memory:").startswith((":memory:", "file:")) and not os.path.isdir(folder):
        engine.dispose()
        raise PreflightError(f"CDS_DATABASE_URL={shown}: cannot open the audit database (the directory {folder} "
                             "does not exist)", fix)
    try:
        upgrade(engine)
    except (SQLAlchemyError, OSError) as exc:
        cause = one_line(getattr(exc, "orig", None) or exc, 240)
        raise PreflightError(f"CDS_DATABASE_URL={shown}: cannot open the audit database ({cause})", fix) from None
    finally:
        engine.dispose()
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if database and database != ":memory:" and not database.startswith("file:") and not os.path.isabs(database):
        shown += f" ({os.path.abspath(database)})"
    return shown


def _check_port(host: str, port: int, how: str) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PreflightError(f"cannot resolve the bind address {host!r} ({exc.strerror})",
                             "set --host or CDS_HOST to an address of this machine (127.0.0.1, or 0.0.0.0 in a container)") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreflightError(f"port {port} on {host} is already in use (another cds-service or program listens there)",
                                     f"stop that program, or pick a free port with {how}") from None
            if exc.errno == errno.EACCES:
                raise PreflightError(f"not allowed to listen on port {port} (ports below 1024 need privileges)",
                                     f"pick a port above 1023 with {how}") from None
            raise PreflightError(f"cannot listen on {host}:{port} ({exc.strerror})",
                                 "set --host/CDS_HOST to an address of this machine") from None


# ---------------------------------------------------------------------- metrics directory
def prepare_metrics_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR for this server (must be set before prometheus_client is imported): the
    operator's (emptied of old files) or a fresh temporary one."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for f in list(path.glob("*.db")) + [path / READY_FLAG]:
            f.unlink(missing_ok=True)
        return str(path)
    fresh = tempfile.mkdtemp(prefix="cds-metrics-")
    os.environ[MULTIPROC_ENV] = fresh
    os.environ["CDS_METRICS_TMPDIR_OWNED"] = fresh
    return fresh


def remove_metrics_dir() -> None:
    owned = os.environ.get("CDS_METRICS_TMPDIR_OWNED")
    if owned:
        shutil.rmtree(owned, ignore_errors=True)


# ---------------------------------------------------------------------- gunicorn
def apply_gunicorn_settings(cfg: Any, settings: Settings, found: Preflight | None = None) -> None:
    """Our part of the gunicorn configuration: one log format, no control socket, the ready line, metrics."""
    from . import logs

    cfg.set("logconfig_dict", logs.gunicorn_logconfig(settings.log_level, settings.log_format))
    cfg.set("control_socket_disable", True)  # gunicornc's socket in $HOME: nothing of ours uses it
    cfg.set("child_exit", _child_exit)
    cfg.set("on_exit", _on_exit)
    if found is not None:
        def post_worker_init(worker: Any) -> None:
            _announce_ready(worker, found)

        def when_ready(server: Any) -> None:
            if settings.metrics_port:
                _start_metrics_server(settings)

        cfg.set("post_worker_init", post_worker_init)
        cfg.set("when_ready", when_ready)


def _child_exit(server: Any, worker: Any) -> None:
    from . import metrics

    metrics.worker_exited(worker.pid)


def _on_exit(server: Any) -> None:
    remove_metrics_dir()


def _start_metrics_server(settings: Settings) -> None:
    from prometheus_client import start_http_server

    from .metrics import registry

    start_http_server(settings.metrics_port, addr=settings.host, registry=registry())
    log.info("metrics on http://%s:%d/metrics (all workers)", settings.host, settings.metrics_port)


def _announce_ready(worker: Any, found: Preflight) -> None:
    """The first worker that can answer prints the ready line (once per server, not per worker)."""
    from .metrics import multiprocess_dir

    flag = Path(multiprocess_dir() or tempfile.gettempdir()) / READY_FLAG
    try:
        fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    log.info(ready_line(found), extra=ready_fields(found))


def base_url(settings: Settings) -> str:
    host = settings.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    return f"http://{shown}:{settings.port}"


def ready_fields(found: Preflight) -> dict[str, Any]:
    s = found.settings
    return {"url": base_url(s), "authMode": s.auth_mode, "trustedIssuers": found.issuers, "database": found.database,
            "knowledgeVersion": found.knowledge_version, "services": list(found.services), "workers": s.workers,
            "metrics": f"http://{s.host}:{s.metrics_port}/metrics" if s.metrics_port else "/metrics (authenticated)"}


def ready_line(found: Preflight) -> str:
    s = found.settings
    auth = ("OFF (development only)" if s.auth_mode == "off"
            else f"{s.auth_mode} ({found.issuers} trusted issuer{'s' if found.issuers != 1 else ''})")
    metrics_at = f"port {s.metrics_port}" if s.metrics_port else "/metrics"
    return (f"ready: {base_url(s)}/cds-services; auth {auth}; database {found.database}; "
            f"knowledge {found.knowledge_version}; {len(found.services)} services; {s.workers} workers; metrics {metrics_at}")


def warn_if_open(settings: Settings) -> None:
    if settings.auth_mode == "off":
        log.warning("CLIENT AUTHENTICATION IS OFF (CDS_AUTH_MODE=off): any caller can use this service. "
                    "Development only.")
