"""Schema creation/upgrade for the audit store."""
from __future__ import annotations

from sqlalchemy.engine import Engine

from .schema import Base


def upgrade(engine: Engine) -> None:
    Base.metadata.create_all(engine)
