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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import jwt
import requests
import yaml
from flask import Flask, g, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.exc import SQLAlchemyError

from .config import Settings
from .errors import AuthUnavailable, ConfigurationError, MissingToken, Unauthorized

log = logging.getLogger(__name__)

# Asymmetric JWS algorithms PyJWT can verify; `none` and every HMAC (HS*) are never accepted.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                   "ES256", "ES256K", "ES384", "ES512", "EdDSA"})
MAX_JWKS_BYTES = 256 * 1024
FAILED_FETCH_BACKOFF_SECONDS = 5.0
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
    def _has_keys(self) -> "_IssuerEntry":
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
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))  # JSON is YAML
        parsed = _IssuersFile.model_validate(raw)
    except OSError as exc:
        raise ConfigurationError(f"CDS_TRUSTED_ISSUERS_FILE {p}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
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
class _CachedSet:
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched_at: float = float("-inf")
    refreshed_at: float = float("-inf")  # last refresh caused by an unknown kid
    failed_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)


class KeySourceError(Exception):
    pass


class JwksCache:
    """JWK Sets by URL: fetched with a short timeout, cached, refreshed at most once per
    ``refresh_min`` seconds when a token names an unknown kid."""

    def __init__(self, timeout: float, ttl: float, refresh_min: float,
                 clock: Callable[[], float] = time.monotonic):
        self.timeout, self.ttl, self.refresh_min, self.clock = timeout, ttl, refresh_min, clock
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy or netrc surprises for key material
        self._sets: dict[str, _CachedSet] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def key(self, url: str, kid: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._sets.setdefault(url, _CachedSet())
        with entry.lock:
            now = self.clock()
            if now - entry.fetched_at > self.ttl:
                self._fetch(url, entry)
            if kid in entry.keys:
                return entry.keys[kid]
            if now - entry.refreshed_at >= self.refresh_min:
                entry.refreshed_at = now
                log.info("JWKS %s: unknown kid, refreshing once", url)
                self._fetch(url, entry)
            return entry.keys.get(kid)

    def _fetch(self, url: str, entry: _CachedSet) -> None:
        now = self.clock()
        if now - entry.failed_at < FAILED_FETCH_BACKOFF_SECONDS and not entry.keys:
            raise KeySourceError(f"JWKS {url} failed recently; not retrying yet")
        self.fetches += 1
        try:
            with self.http.get(url, timeout=self.timeout, allow_redirects=False, stream=True,
                               headers={"Accept": "application/json"}) as resp:
                if resp.status_code != 200:
                    raise KeySourceError(f"JWKS {url} answered HTTP {resp.status_code}")
                body = resp.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
            if len(body) > MAX_JWKS_BYTES:
                raise KeySourceError(f"JWKS {url} is larger than {MAX_JWKS_BYTES} bytes")
            entry.keys = _public_keys(json.loads(body), f"JWKS {url}")
            entry.fetched_at = now
        except (requests.RequestException, ValueError, KeySourceError) as exc:
            entry.failed_at = now
            log.warning("JWKS fetch failed: %s", exc)
            if entry.keys and now - entry.fetched_at <= 2 * self.ttl:
                return  # keep serving the last good set for a while
            raise KeySourceError(str(exc)) from None


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
                                      settings.jwks_refresh_min_seconds)

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
        exp = datetime.fromtimestamp(int(claims["exp"]) + self.settings.jwt_leeway_seconds, timezone.utc)
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
    services = app.extensions["cds"]
    settings: Settings = services.settings
    if settings.auth_mode == "off":
        return
    _check_algorithms(settings)
    if not settings.trusted_issuers_file:
        raise ConfigurationError(f"CDS_AUTH_MODE={settings.auth_mode} needs CDS_TRUSTED_ISSUERS_FILE "
                                 "(see docs/security.md), or CDS_AUTH_MODE=off for development")
    issuers = load_trusted_issuers(settings.trusted_issuers_file)
    authenticator = ClientAuthenticator(settings, issuers, services.store)
    app.extensions["cds_auth"] = authenticator
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


def current_client() -> ClientIdentity | None:
    """The verified caller of this request, if any."""
    return g.get("cds_client")


__all__ = ["ClientAuthenticator", "ClientIdentity", "JwksCache", "TrustedIssuer", "current_client",
           "init_app", "load_trusted_issuers"]
