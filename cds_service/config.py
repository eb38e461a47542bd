"""Service settings: defaults, overridden by ``CDS_*`` environment variables, then by an explicit mapping.

Every setting is documented in README.md ("Configuration"). One prefix: ``CDS_``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "CDS_"
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def _default_hooks_dir() -> str:
    """The checkout's hooks/ (editable install), else the copy shipped in the package."""
    from .bundled import data_dir

    return str(data_dir("hooks"))


def _cpus() -> int:
    """CPUs this process may run on (a cpuset or taskset counts; a container's CPU quota does not: set CDS_WORKERS)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 2


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _parse_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """All runtime settings. Field ``foo_bar`` is read from ``CDS_FOO_BAR``."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = field(default_factory=lambda: _cpus())  # measured best: one worker per CPU
    # Where hook (service) definitions live: one YAML file per CDS service.
    hooks_dir: str = field(default_factory=_default_hooks_dir)
    # Knowledge file set; empty = the one shipped in the package.
    knowledge_dir: str = ""
    # Audit store. SQLite file by default (embedded); PostgreSQL by URL.
    database_url: str = "sqlite:///cds-audit.sqlite3"
    audit_retention_days: int = 365
    # Prefetch completion.
    fetch_deadline_seconds: float = 2.0
    fetch_call_timeout_seconds: float = 1.5
    fetch_retries: int = 2
    fetch_page_limit: int = 5
    allow_http_fhir: bool = False
    fhir_server_allowlist: tuple[str, ...] = ()
    # Client authentication (CDS Hooks 2.0 "Trusting CDS Clients").
    auth_mode: str = "off"  # required | optional | off
    trusted_issuers_file: str = ""
    jwt_algorithms: tuple[str, ...] = ("ES384", "RS384")
    jwt_leeway_seconds: int = 60
    jwks_timeout_seconds: float = 2.0
    # Public base URL used for the JWT `aud` check behind a proxy (empty = from the request).
    public_base_url: str = ""
    # HTTP hardening.
    max_body_bytes: int = 5 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    # Audit web pages under /audit/.
    audit_ui: bool = False
    # Validate every prefetch resource with the full fhir.resources R4B models (slow; off the hot path).
    strict_validation: bool = False
    log_level: str = "INFO"
    log_format: str = "text"  # text | json
    # 0: GET /metrics on the service port, behind the client authentication; else a port of its own (serve)
    metrics_port: int = 0
    # Client JWT key handling: JWKS cache lifetime, minimum gap between unknown-kid refreshes, longest exp accepted.
    jwks_cache_seconds: float = 300
    jwks_refresh_min_seconds: float = 30.0
    jwt_max_lifetime_seconds: int = 900
    # Evidence page linked from every card: HMAC key of its signed links (empty: `serve` makes a random one per
    # start, create_app alone adds no links) and how long a link stays valid.
    evidence_key: str = field(default="", repr=False)
    evidence_link_seconds: int = 3600
    # Trust, second pass (issue 12): stale JWKS use while one background refresh runs; FHIR read bounds;
    # feedback items per call.
    jwks_stale_grace_seconds: float = 600.0
    fetch_max_page_bytes: int = 4 * 1024 * 1024
    fetch_max_call_bytes: int = 8 * 1024 * 1024
    feedback_max_items: int = 100
    # Audit spool: one append-only file per worker, written before each response, shipped by the writer.
    audit_spool_dir: str = ""
    audit_spool_fsync: str = "interval"  # always | interval | off
    # `cds-service serve`: worker model and slow-client bounds (see README "Serving").
    worker_class: str = "buffered"  # buffered | gthread | sync
    worker_threads: int = 4
    worker_keepalive_seconds: int = 2
    request_header_timeout_seconds: float = 5.0
    request_body_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def with_overrides(self, **overrides: Any) -> Settings:
        s = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        s.validate()
        return s

    def validate(self) -> None:
        if self.auth_mode not in {"required", "optional", "off"}:
            raise ValueError(f"CDS_AUTH_MODE must be required, optional or off, not {self.auth_mode!r}")
        if self.fetch_deadline_seconds <= 0 or self.fetch_call_timeout_seconds <= 0:
            raise ValueError("fetch deadlines must be positive")
        if self.audit_spool_fsync not in {"always", "interval", "off"}:
            raise ValueError(f"CDS_AUDIT_SPOOL_FSYNC must be always, interval or off, not {self.audit_spool_fsync!r}")
        if self.worker_class not in {"buffered", "gthread", "sync"}:
            raise ValueError(f"CDS_WORKER_CLASS must be buffered, gthread or sync, not {self.worker_class!r}")
        if self.fetch_page_limit < 1:
            raise ValueError("CDS_FETCH_PAGE_LIMIT must be >= 1")
        if self.log_format not in {"text", "json"}:
            raise ValueError(f"CDS_LOG_FORMAT must be text or json, not {self.log_format!r}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"CDS_METRICS_PORT must be a port number (0 = /metrics on the service port), not {self.metrics_port}")
        if self.evidence_key and len(self.evidence_key) < 32:
            raise ValueError("CDS_EVIDENCE_KEY must be at least 32 characters "
                             "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        if not 60 <= self.evidence_link_seconds <= 7 * 86400:
            raise ValueError("CDS_EVIDENCE_LINK_SECONDS must be between 60 and 604800")
        if min(self.fetch_max_page_bytes, self.fetch_max_call_bytes, self.feedback_max_items) < 1:
            raise ValueError("CDS_FETCH_MAX_PAGE_BYTES, CDS_FETCH_MAX_CALL_BYTES and CDS_FEEDBACK_MAX_ITEMS must be >= 1")


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    t = str(type_name)
    try:
        if t == "bool":
            return _parse_bool(raw)
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t.startswith("tuple"):
            return _parse_list(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: {exc}") from None
    return raw
