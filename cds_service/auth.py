"""Client authentication per CDS Hooks 2.0 "Trusting CDS Clients": a signed JWT on every call.

Trusted issuers come from ``CDS_TRUSTED_ISSUERS_FILE`` (see docs/security.md). A failure is a 401
with a generic message; the reason goes to the log, never the token.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jwt
import requests
from flask import Flask, g, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.exc import SQLAlchemyError

from .config import Settings
from .errors import AuthUnavailable, ConfigurationError, MissingToken, Unauthorized
from .prefetch.gateway import NoCookies
from .services import get_services
from .yaml_files import YAMLError, load_yaml

log = logging.getLogger(__name__)

# Asymmetric JWS algorithms PyJWT can verify; `none` and every HMAC (HS*) are never accepted.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                   "ES256", "ES256K", "ES384", "ES512", "EdDSA"})
MAX_JWKS_BYTES = 256 * 1024
FAILED_FETCH_BACKOFF_SECONDS = 5.0  # first backoff after a failed JWKS fetch; doubles per failure
MAX_FETCH_BACKOFF_SECONDS = 60.0
# Endpoints any caller may reach: liveness, readiness, the API description.
PUBLIC_BLUEPRINTS = frozenset({"health", "openapi", "evidence"})  # evidence: a signed link is its credential


# ---------------------------------------------------------------------- trusted issuers file
class _IssuerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iss: str = Field(min_length=1)
    tenant: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_file: str | None = None
    jwks_url: str | None = None
    jku: list[str] = Field(default_factory=list)
    sub: list[str] = Field(default_factory=list)  # optional allowlist of client ids (`sub`)

    @field_validator("jwks_url")
    @classmethod
    def _url_ok(cls, v: str | None) -> str | None:
        if v is not None:
            _check_key_url(v)
        return v

    @field_validator("jku")
    @classmethod
    def _jku_ok(cls, v: list[str]) -> list[str]:
        for url in v:
            _check_key_url(url)
        return v

    @model_validator(mode="after")
    def _has_keys(self) -> _IssuerEntry:
        if not (self.jwks or self.jwks_file or self.jwks_url or self.jku):
            raise ValueError("an issuer needs at least one key source: jwks, jwks_file, jwks_url or jku")
        return self


class _IssuersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    issuers: list[_IssuerEntry]


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    tenant: str | None
    static_keys: dict[str, dict[str, Any]]  # kid -> JWK (public)
    jwks_url: str | None
    jku: frozenset[str]
    subjects: frozenset[str]


def _check_key_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"{url!r}: key URLs must be https (http only on loopback, for development)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _public_keys(jwks: Any, where: str) -> dict[str, dict[str, Any]]:
    """kid -> JWK for every usable public signing key; symmetric and private keys are refused."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError(f"{where}: a JWK Set must be an object with a 'keys' array")
    out: dict[str, dict[str, Any]] = {}
    for key in jwks["keys"]:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
            continue  # keys without a kid cannot be selected (CDS Hooks requires kid)
        if key.get("kty") not in ("RSA", "EC", "OKP") or key.get("use", "sig") != "sig":
            continue
        if "d" in key:
            raise ValueError(f"{where}: key {key['kid']!r} contains private key material")
        out[key["kid"]] = key
    return out


def load_trusted_issuers(path: str | Path) -> dict[str, TrustedIssuer]:
    """Read the trusted issuers file (YAML or JSON); any problem stops start-up."""
    p = Path(path)
    try:
        raw = load_yaml(p.read_text(encoding="utf-8"))  # JSON is YAML
        parsed = _IssuersFile.model_validate(raw)
    except OSError as exc:
        raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {p}: cannot read: {exc}") from None
    except YAMLError as exc:
        raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {p}: not YAML/JSON: {exc}") from None
    except ValidationError as exc:
        raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {p}: invalid:\n{exc}") from None
    issuers: dict[str, TrustedIssuer] = {}
    for e in parsed.issuers:
        if e.iss in issuers:
            raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {p}: issuer {e.iss!r} is listed twice")
        keys: dict[str, dict[str, Any]] = {}
        try:
            if e.jwks is not None:
                keys.update(_public_keys(e.jwks, f"issuer {e.iss} jwks"))
            if e.jwks_file:
                f = Path(e.jwks_file)
                f = f if f.is_absolute() else p.parent / f
                keys.update(_public_keys(json.loads(f.read_text(encoding="utf-8")), f"issuer {e.iss} jwks_file {f}"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {p}: {exc}") from None
        issuers[e.iss] = TrustedIssuer(e.iss, e.tenant, keys, e.jwks_url, frozenset(e.jku), frozenset(e.sub))
    return issuers


# ---------------------------------------------------------------------- JWKS over HTTP
@dataclass
class _KeySet:
    """What is known about one JWKS URL. Fields change only under JwksCache._lock (never held during I/O)."""

    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched_at: float = float("-inf")  # cache clock
    refreshed_at: float = float("-inf")  # last refresh caused by an unknown kid
    failures: int = 0  # consecutive failed fetches
    retry_at: float = float("-inf")  # backoff: no fetch before this (cache clock)
    last_error: str = ""
    pending: Future | None = None  # the one fetch in flight, if any
    pending_until: float = 0.0  # time.monotonic() by which it is given up


class KeySourceError(Exception):
    pass


class JwksCache:
    """JWK Sets by URL. One fetch per URL at a time, each under one total deadline (connect and body);
    callers never queue behind a lock.

    - fresh keys (younger than ``ttl``) are used as they are;
    - stale keys (up to ``ttl + grace``) are still used while ONE background refresh runs;
    - a token naming an unknown kid triggers a refresh at most once per ``refresh_min`` seconds;
    - a failing URL is not fetched again before a backoff (5 s, doubling up to 60 s), whether or not
      keys were fetched before; without usable keys, callers get KeySourceError at once.
    """

    def __init__(self, timeout: float, ttl: float, refresh_min: float, grace: float = 600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.timeout, self.ttl, self.refresh_min, self.grace, self.clock = timeout, ttl, refresh_min, grace, clock
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy or netrc surprises for key material
        self.http.cookies = NoCookies()  # no state from one fetch to the next
        self._sets: dict[str, _KeySet] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jwks-fetch")

    def key(self, url: str, kid: str) -> dict[str, Any] | None:
        """The JWK for ``kid`` at ``url``; None when the set has no such key; KeySourceError when no usable set."""
        now = self.clock()
        with self._lock:
            entry = self._sets.setdefault(url, _KeySet())
            age = now - entry.fetched_at
            usable = age <= self.ttl + self.grace
            if usable and kid in entry.keys:
                if age > self.ttl:  # stale: serve it, refresh in the background
                    self._start_fetch(url, entry, now)
                return entry.keys[kid]
            if usable:  # the set is usable but lacks this kid: one refresh per refresh_min, joined by others
                if entry.pending is None:
                    if now - entry.refreshed_at < self.refresh_min or now < entry.retry_at:
                        return None
                    entry.refreshed_at = now
                    log.info("JWKS %s: unknown kid, refreshing once", url)
                fetch = self._start_fetch(url, entry, now)
            else:
                fetch = self._start_fetch(url, entry, now)
                if fetch is None:
                    raise KeySourceError(f"JWKS {url} failed recently ({entry.last_error}); "
                                         f"next try in {entry.retry_at - now:.1f} s")
            if fetch is None:
                return None
            until = entry.pending_until
        try:
            fetch.result(timeout=max(0.0, until - time.monotonic()))
        except FuturesTimeout:
            raise KeySourceError(f"JWKS {url} did not answer within {self.timeout:.1f} s") from None
        except Exception as exc:  # recorded by _fetch already
            raise KeySourceError(str(exc)) from None
        now = self.clock()
        with self._lock:
            if now - entry.fetched_at > self.ttl + self.grace:
                raise KeySourceError(f"JWKS {url} unavailable ({entry.last_error or 'no keys'})")
            return entry.keys.get(kid)

    def _start_fetch(self, url: str, entry: _KeySet, now: float) -> Future | None:
        """The fetch in flight for ``url``, starting one unless backing off. Called under the lock."""
        if entry.pending is not None:
            if time.monotonic() <= entry.pending_until:
                return entry.pending
            return None  # overdue (stuck in name resolution?): callers do not wait for it; no second fetch
        if now < entry.retry_at:
            return None
        entry.pending_until = time.monotonic() + self.timeout
        entry.pending = self._pool.submit(self._fetch, url, entry, entry.pending_until)
        return entry.pending

    def _fetch(self, url: str, entry: _KeySet, until: float) -> None:
        started = self.clock()
        try:
            keys = self._download(url, until)
        except Exception as exc:  # any failure (network, protocol, size, JSON) only marks the URL as failing
            reason = f"{type(exc).__name__}: {str(exc)[:300]}" if not isinstance(exc, KeySourceError) else str(exc)
            with self._lock:
                entry.failures += 1
                backoff = min(FAILED_FETCH_BACKOFF_SECONDS * 2 ** (entry.failures - 1), MAX_FETCH_BACKOFF_SECONDS)
                entry.retry_at = self.clock() + backoff
                entry.last_error = reason
                entry.pending = None
            log.warning("JWKS fetch %s failed (%d in a row; next try in %.0f s): %s", url, entry.failures, backoff,
                        reason)
            raise KeySourceError(f"JWKS {url}: {reason}") from None
        with self._lock:
            entry.keys, entry.fetched_at = keys, started
            entry.failures, entry.retry_at, entry.last_error = 0, float("-inf"), ""
            entry.pending = None

    def _download(self, url: str, until: float) -> dict[str, dict[str, Any]]:
        """GET the JWK Set, connect and body within ``until`` (time.monotonic()), at most MAX_JWKS_BYTES."""
        left = until - time.monotonic()
        if left <= 0:
            raise KeySourceError("deadline reached before the request was sent")
        with self.http.get(url, timeout=(left, left), allow_redirects=False, stream=True,
                           headers={"Accept": "application/json", "Accept-Encoding": "identity"}) as resp:
            if resp.status_code != 200:
                raise KeySourceError(f"answered HTTP {resp.status_code}")
            body = bytearray()
            read = getattr(resp.raw, "read1", None) or resp.raw.read
            while True:
                if time.monotonic() > until:
                    raise KeySourceError(f"did not finish its answer within {self.timeout:.1f} s")
                chunk = read(16 * 1024)
                if not chunk:
                    break
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise KeySourceError(f"answer is larger than {MAX_JWKS_BYTES} bytes")
        return _public_keys(json.loads(body), f"JWKS {url}")


# ---------------------------------------------------------------------- verification
@dataclass(frozen=True)
class ClientIdentity:
    """The verified caller, kept on ``flask.g.cds_client`` for the audit record."""

    iss: str
    sub: str | None
    tenant: str | None
    jti: str
    kid: str


class ClientAuthenticator:
    def __init__(self, settings: Settings, issuers: dict[str, TrustedIssuer], store: Any,
                 keys: JwksCache | None = None):
        self.settings = settings
        self.issuers = issuers
        self.store = store
        self.algorithms = frozenset(settings.jwt_algorithms)
        self.keys = keys or JwksCache(settings.jwks_timeout_seconds, settings.jwks_cache_seconds,
                                      settings.jwks_refresh_min_seconds, settings.jwks_stale_grace_seconds)

    def verify(self, token: str, audience: str) -> ClientIdentity:
        """Verify one client JWT for ``audience`` (the endpoint URL); raises Unauthorized."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthorized(reason=f"not a JWT: {type(exc).__name__}") from None
        alg = header.get("alg")
        if alg not in self.algorithms or alg not in ASYMMETRIC_ALGORITHMS:
            raise Unauthorized(reason=f"algorithm {alg!r} is not accepted")
        typ = header.get("typ")
        if typ is not None and str(typ).upper() != "JWT":
            raise Unauthorized(reason=f"typ {typ!r} is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized(reason="no kid in the JWT header")
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized(reason=f"issuer {str(iss)[:200]!r} is not trusted")
        jwk = self._find_key(issuer, kid, header.get("jku"))
        if jwk.get("alg") not in (None, alg):
            raise Unauthorized(reason=f"key {kid!r} is for {jwk.get('alg')}, the token says {alg}")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
            claims = jwt.decode(
                token, key=key, algorithms=[alg], leeway=self.settings.jwt_leeway_seconds, issuer=issuer.iss,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(reason=f"issuer {issuer.iss}: {type(exc).__name__}: {exc}") from None
        self._check_claims(issuer, claims, audience)
        exp = datetime.fromtimestamp(int(claims["exp"]) + self.settings.jwt_leeway_seconds, UTC)
        try:
            fresh = self.store.remember_jti(issuer.iss, claims["jti"], exp)
        except SQLAlchemyError:
            log.exception("JWT replay cache unavailable")
            raise AuthUnavailable("client authentication is temporarily unavailable") from None
        if not fresh:
            raise Unauthorized(reason=f"issuer {issuer.iss}: jti replayed")
        tenant = issuer.tenant or (claims.get("tenant") if isinstance(claims.get("tenant"), str) else None)
        sub = claims.get("sub") if isinstance(claims.get("sub"), str) else None
        return ClientIdentity(issuer.iss, sub, tenant, claims["jti"], kid)

    def _find_key(self, issuer: TrustedIssuer, kid: str, jku: Any) -> dict[str, Any]:
        if jku is not None:
            if not isinstance(jku, str) or jku not in issuer.jku:
                raise Unauthorized(reason=f"issuer {issuer.iss}: jku {str(jku)[:200]!r} is not on its allowlist")
            urls = [jku]
        else:
            if kid in issuer.static_keys:
                return issuer.static_keys[kid]
            urls = [issuer.jwks_url] if issuer.jwks_url else []
        for url in urls:
            try:
                found = self.keys.key(url, kid)
            except KeySourceError as exc:
                raise Unauthorized(reason=f"issuer {issuer.iss}: keys unavailable: {exc}") from None
            except Exception as exc:  # a key source never turns into a 500
                log.exception("JWKS lookup failed unexpectedly")
                raise Unauthorized(reason=f"issuer {issuer.iss}: keys unavailable: {type(exc).__name__}") from None
            if found is not None:
                return found
        raise Unauthorized(reason=f"issuer {issuer.iss}: unknown kid {kid[:100]!r}")

    def _check_claims(self, issuer: TrustedIssuer, claims: dict[str, Any], audience: str) -> None:
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) == 1:
            aud = aud[0]
        if aud != audience:
            raise Unauthorized(reason=f"issuer {issuer.iss}: aud {str(claims.get('aud'))[:300]!r} is not {audience!r}")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 500:
            raise Unauthorized(reason=f"issuer {issuer.iss}: jti must be a non-empty string of at most 500 characters")
        lifetime = int(claims["exp"]) - time.time()
        if lifetime > self.settings.jwt_max_lifetime_seconds + self.settings.jwt_leeway_seconds:
            raise Unauthorized(reason=f"issuer {issuer.iss}: exp is {lifetime:.0f}s away, more than "
                                      f"CDS_JWT_MAX_LIFETIME_SECONDS={self.settings.jwt_max_lifetime_seconds}")
        if issuer.subjects and claims.get("sub") not in issuer.subjects:
            raise Unauthorized(reason=f"issuer {issuer.iss}: sub is not on its allowlist")
        tenant = claims.get("tenant")
        if issuer.tenant and tenant is not None and tenant != issuer.tenant:
            raise Unauthorized(reason=f"issuer {issuer.iss}: tenant claim does not match the configured tenant")


# ---------------------------------------------------------------------- Flask wiring
def endpoint_url(settings: Settings) -> str:
    """The `aud` a client must use: CDS_PUBLIC_BASE_URL + path, else this request's URL, both without query.

    The path is the one the client sent (RAW_URI/REQUEST_URI, percent-encoding kept), so the comparison is exact.
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    path = raw.split("?", 1)[0] if raw else quote(request.script_root + request.path, safe="/:@!$&'()*+,;=-._~")
    if path.startswith(("http://", "https://")):  # absolute-form request target
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/") + path[len(request.script_root):]
    return request.host_url.rstrip("/") + path


def bearer_token() -> str | None:
    value = request.headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(reason="Authorization header is not a Bearer token")
    return token.strip()


def _check_algorithms(settings: Settings) -> None:
    bad = [a for a in settings.jwt_algorithms if a not in ASYMMETRIC_ALGORITHMS]
    if bad or not settings.jwt_algorithms:
        raise ConfigurationError(f"CDS_JWT_ALGORITHMS may only list asymmetric algorithms "
                                 f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}); refused: {', '.join(bad) or '(empty)'}")


def init_app(app: Flask) -> None:
    """Authenticate every request to a protected endpoint according to CDS_AUTH_MODE."""
    services = get_services(app)
    settings = services.settings
    if settings.auth_mode == "off":
        return
    _check_algorithms(settings)
    if not settings.trusted_issuers_file:
        raise ConfigurationError(f"CDS_AUTH_MODE={settings.auth_mode} needs CDS_TRUSTED_ISSUERS_FILE "
                                 "(see docs/security.md), or CDS_AUTH_MODE=off for development")
    issuers = load_trusted_issuers(settings.trusted_issuers_file)
    authenticator = ClientAuthenticator(settings, issuers, services.store)
    services.authenticator = authenticator
    log.info("client authentication %s: %d trusted issuer(s)", settings.auth_mode, len(issuers))
    if not settings.public_base_url:
        log.warning("CDS_PUBLIC_BASE_URL is not set: the JWT aud check uses the request's Host header; "
                    "set it in production so a token meant for another service cannot be used here")

    @app.before_request
    def _authenticate() -> None:
        g.cds_client = None
        if request.method == "OPTIONS" or request.url_rule is None:
            return  # CORS preflight; unknown paths and methods get their 404/405
        if request.blueprint in PUBLIC_BLUEPRINTS or request.endpoint == "static":
            return
        token = bearer_token()
        if token is None:
            if settings.auth_mode == "required":
                raise MissingToken(reason=f"no bearer token on {request.method} {request.path}")
            return
        g.cds_client = authenticator.verify(token, endpoint_url(settings))


__all__ = ["ClientAuthenticator", "ClientIdentity", "JwksCache", "TrustedIssuer",
           "init_app", "load_trusted_issuers"]
