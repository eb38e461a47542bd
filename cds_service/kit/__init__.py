"""Integration kit: the fixture loader and an EHR stand-in (used by the CLI and the integration tests)."""
from .loader import FixtureLoader, LoadError, ScenarioLoad
from .standin import EhrStandIn, StandInError, cards_table, sign_client_jwt

__all__ = ["FixtureLoader", "LoadError", "ScenarioLoad", "EhrStandIn", "StandInError", "cards_table", "sign_client_jwt"]
