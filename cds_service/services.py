"""The service container: what the HTTP layer needs, built once per app by ``create_app``, and its one accessor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from .audit.store import AuditStore
    from .auth import ClientAuthenticator
    from .config import Settings
    from .definitions import ServiceCatalog
    from .engine import Engine
    from .evidence.tokens import EvidenceSigner
    from .knowledge import Knowledge

EXTENSION = "cds"  # the key in Flask's app.extensions


@dataclass
class Services:
    """One app's settings, knowledge, service catalog, engine and audit store; the client authenticator
    (``auth.init_app``, none when CDS_AUTH_MODE=off) and the evidence link signer (``evidence_page.init_app``,
    none without CDS_EVIDENCE_KEY) are added when the app is built."""

    settings: Settings
    knowledge: Knowledge
    catalog: ServiceCatalog
    engine: Engine
    store: AuditStore
    authenticator: ClientAuthenticator | None = None
    evidence_signer: EvidenceSigner | None = None


def install(app: Flask, services: Services) -> None:
    app.extensions[EXTENSION] = services


def get_services(app: Flask | None = None) -> Services:
    """The container of ``app``, by default of the app handling the current request (or app context)."""
    services: Services = (current_app if app is None else app).extensions[EXTENSION]
    return services
