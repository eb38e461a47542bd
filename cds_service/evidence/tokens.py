"""Signed, expiring, card-scoped evidence links: an HS256 JWT (PyJWT) on a key derived from CDS_EVIDENCE_KEY.

The claims name the card (its uuid) and the audited call (its ``received_at`` to the microsecond), nothing
about the patient. The token is signed, not encrypted: it must carry no patient identifier.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

AUDIENCE = "cds-evidence-page"
ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 1024


class LinkRefused(Exception):
    """The token is unusable; ``reason`` is for the 403 page and the log (never the token itself)."""

    def __init__(self, reason: str, expired: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


@dataclass(frozen=True)
class CardRef:
    """Which audited card a link opens: the card uuid and the call's receipt time (microseconds, UTC)."""

    card_uuid: str
    received_at: datetime
    expires_at: datetime | None = None


def _micros(dt: datetime) -> int:
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    delta = dt.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


class EvidenceSigner:
    """Makes and checks evidence tokens. ``clock`` is wall-clock seconds (the link's life is real time)."""

    def __init__(self, key: str, lifetime_seconds: int = 3600, clock: Callable[[], float] = time.time):
        if len(key) < 32:
            raise ValueError("the evidence key must be at least 32 characters")
        # a key of its own, so CDS_EVIDENCE_KEY used elsewhere by mistake still signs nothing else
        self._key = hashlib.sha256(b"cds-evidence-link\x00" + key.encode("utf-8")).digest()
        self.lifetime = lifetime_seconds
        self.clock = clock

    def token(self, card_uuid: str, received_at: datetime, now: float | None = None) -> str:
        issued = int(self.clock() if now is None else now)
        claims = {"aud": AUDIENCE, "iat": issued, "exp": issued + self.lifetime, "card": card_uuid,
                  "at": _micros(received_at)}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str | None) -> CardRef:
        """The card a valid token names; LinkRefused when it is missing, altered, foreign or expired."""
        if not token:
            raise LinkRefused("no token")
        if len(token) > MAX_TOKEN_CHARS:
            raise LinkRefused("token too long")
        try:  # times are checked below on our clock (the link's life), not PyJWT's
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], audience=AUDIENCE,
                                options={"require": ["exp", "iat", "aud", "card", "at"], "verify_exp": False,
                                         "verify_iat": False, "verify_nbf": False})
        except jwt.PyJWTError as exc:
            raise LinkRefused(f"invalid token ({type(exc).__name__})") from None
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int) or not isinstance(iat, int) or exp - iat > self.lifetime:
            raise LinkRefused("invalid token (times)")
        if exp <= self.clock():
            raise LinkRefused("link expired", expired=True)
        card, at = claims["card"], claims["at"]
        if not isinstance(card, str) or not 0 < len(card) <= 64 or not isinstance(at, int) or not 0 < at < 10**17:
            raise LinkRefused("invalid token (claims)")
        return CardRef(card, _from_micros(at), datetime.fromtimestamp(exp, UTC))
