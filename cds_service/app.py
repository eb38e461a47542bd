"""The application factory."""
from __future__ import annotations

import gc
from collections.abc import Callable
from datetime import datetime

from flask import Flask

from .audit.store import AuditStore
from .config import Settings
from .definitions import load_definitions
from .engine import Engine
from .knowledge import Knowledge, load_knowledge
from .prefetch.gateway import FhirGateway
from .services import Services, install


def create_app(settings: Settings | None = None, *, knowledge: Knowledge | None = None,
               clock: Callable[[], datetime] | None = None, gateway: FhirGateway | None = None) -> Flask:
    """Build the Flask app.

    ``settings``: default ``Settings.from_env()``; a caller changes some with ``Settings.with_overrides``.
    ``knowledge``: already loaded knowledge (the tests share one); default: loaded from ``settings.knowledge_dir``.
    ``clock``: the aware "now" the rules evaluate at; default: the wall clock.
    ``gateway``: the FHIR gateway that completes prefetch; default: the engine's own.
    Logging is the caller's to configure (``cds-service serve`` does: ``logs.configure``)."""
    settings = settings or Settings.from_env()
    if knowledge is None:
        knowledge = load_knowledge(settings.knowledge_dir or None)
    catalog = load_definitions(settings.hooks_dir, knowledge)
    store = AuditStore(settings.database_url, spool_dir=settings.audit_spool_dir, spool_fsync=settings.audit_spool_fsync)
    engine = Engine(settings, knowledge, catalog, gateway=gateway, clock=clock)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    install(app, Services(settings, knowledge, catalog, engine, store))

    from . import auth
    from .api import audit_pages, errors, evidence_page, health, hooks, openapi
    from .api import metrics as metrics_api

    errors.init_app(app)
    hooks.init_app(app)
    health.init_app(app)
    openapi.init_app(app)
    audit_pages.init_app(app)  # /audit/ only when CDS_AUDIT_UI
    metrics_api.init_app(app)  # /metrics unless CDS_METRICS_PORT serves it on a port of its own
    evidence_page.init_app(app)  # /evidence: the page behind every card's link (its token is the credential)
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
