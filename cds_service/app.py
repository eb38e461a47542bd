"""The application factory."""
from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask

from . import logs
from .audit.store import AuditStore
from .config import Settings
from .definitions import ServiceCatalog, load_definitions
from .engine import Engine
from .knowledge import Knowledge, load_knowledge

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the HTTP layer needs, built once per process."""

    settings: Settings
    knowledge: Knowledge
    catalog: ServiceCatalog
    engine: Engine
    store: AuditStore


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app. ``config`` may hold Settings field overrides (lower-case names),
    ``SETTINGS`` (a Settings), ``CLOCK`` (a callable returning an aware datetime), ``GATEWAY``."""
    config = dict(config or {})
    settings: Settings = config.pop("SETTINGS", None) or Settings.from_env()
    clock: Callable | None = config.pop("CLOCK", None)
    gateway = config.pop("GATEWAY", None)
    overrides = {k: v for k, v in config.items() if k.islower()}
    if overrides:
        settings = settings.with_overrides(**overrides)
    logs.configure(settings.log_level, settings.log_format)
    knowledge = load_knowledge(settings.knowledge_dir or None)
    catalog = load_definitions(settings.hooks_dir, knowledge)
    store = AuditStore(settings.database_url, spool_dir=settings.audit_spool_dir, spool_fsync=settings.audit_spool_fsync)
    engine = Engine(settings, knowledge, catalog, gateway=gateway, clock=clock)

    app = Flask(__name__)
    app.config.update({k: v for k, v in config.items() if k.isupper()})
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["cds"] = Services(settings, knowledge, catalog, engine, store)

    from . import auth
    from .api import audit_pages, errors, evidence_page, health, hooks, openapi
    from .api import metrics as metrics_api

    errors.init_app(app)
    app.register_blueprint(hooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    audit_pages.register(app)  # /audit/ only when CDS_AUDIT_UI
    metrics_api.register(app)  # /metrics unless CDS_METRICS_PORT serves it on a port of its own
    evidence_page.register(app)  # /evidence: the page behind every card's link (its token is the credential)
    auth.init_app(app)
    if settings.cors_origins:
        from flask_cors import CORS

        CORS(app, origins=list(settings.cors_origins), allow_headers=["Authorization", "Content-Type"],
             methods=["GET", "POST", "OPTIONS"], max_age=600)
    return app


def settle_heap() -> None:
    """Call once the app is built in a long-lived process (``serve`` does): everything built so far lives
    as long as the process, so move it out of the garbage collector's sight, and full collections
    triggered by a large request no longer walk the whole heap (bench section 1)."""
    gc.collect()
    gc.freeze()
