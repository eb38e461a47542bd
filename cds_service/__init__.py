"""CDS Hooks 2.0 service for refractory hypomagnesemia."""
from __future__ import annotations

__version__ = "0.1.0"


def create_app(config=None):
    from .app import create_app as _create_app

    return _create_app(config)
