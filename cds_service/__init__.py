"""CDS Hooks 2.0 service for refractory hypomagnesemia."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app as create_app

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``cds_service.create_app`` is :func:`cds_service.app.create_app`, imported on first use (``import
    cds_service`` stays cheap for the CLI)."""
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
