"""The generated parts of README.md: the configuration table (from ``Settings``) and the rule table (from ``RULES``).

    python -m cds_service.kit.readme          # rewrite the generated sections of README.md
    python -m cds_service.kit.readme --check  # exit 1 when README.md is out of date (the test does this too)
"""
from __future__ import annotations

import inspect
import re
import sys
from dataclasses import MISSING, Field, fields
from typing import Any

from ..config import ENV_PREFIX, REPO_DIR, Settings

README = REPO_DIR / "README.md"

# What each setting means, for integrators (the comments in config.py are the fallback for new fields).
MEANINGS = {
    "host": "Bind address of `cds-service serve` (use `0.0.0.0` in a container).",
    "port": "Port of `cds-service serve`.",
    "workers": "gunicorn worker processes (measured best: one per CPU; README \"Serving\").",
    "hooks_dir": "Directory of the CDS service definitions (one YAML file per service; `prefetch.yaml` holds the prefetch "
                 "sets they share); validated at start-up.",
    "knowledge_dir": "Directory with an alternative knowledge file set (`knowledge.yaml`, `drugs.yaml`, RxNorm CSV); empty = the one "
                     "shipped in the package.",
    "database_url": "SQLAlchemy URL of the audit store and JWT replay cache: a SQLite file (one host) or `postgresql+psycopg://...` "
                    "(shared by several instances).",
    "audit_retention_days": "Audit rows older than this are purged by `cds-service audit purge`.",
    "fetch_deadline_seconds": "One deadline for completing a request's missing prefetch from `fhirServer` (all keys in parallel).",
    "fetch_call_timeout_seconds": "Timeout of one FHIR GET (never longer than what is left of the deadline).",
    "fetch_retries": "Retries of a FHIR GET answered 502/503/504 or failing to connect.",
    "fetch_page_limit": "Most `next` pages followed per prefetch key (only under the `fhirServer` base path).",
    "allow_http_fhir": "Development: accept a plain-http `fhirServer` on loopback or private addresses too (sandboxes, tests). Off: "
                       "https only, and only public addresses unless on the allowlist.",
    "fhir_server_allowlist": "Comma-separated `fhirServer` base URLs the service may call (empty = any https server on a public "
                             "address); their hosts may resolve to private addresses.",
    "auth_mode": "Client JWT check: `required`, `optional` (checked when present) or `off` (development only). `cds-service serve` "
                 "defaults to `required` when the variable is unset.",
    "trusted_issuers_file": "YAML/JSON file of trusted client issuers and their keys (see docs/security.md).",
    "jwt_algorithms": "Accepted client JWT signature algorithms.",
    "jwt_leeway_seconds": "Clock skew tolerated on `exp`/`iat`.",
    "jwks_timeout_seconds": "One total deadline for fetching an issuer's JWK Set (connect and body).",
    "public_base_url": "The service's public base URL, used for the JWT `aud` check behind a proxy or load balancer (empty = the "
                       "request's own URL).",
    "max_body_bytes": "Largest request body accepted (413 above).",
    "cors_origins": "Comma-separated browser origins allowed by CORS (e.g. the CDS Hooks sandbox); empty = no CORS headers.",
    "audit_ui": "Serve the audit web pages under `/audit/`.",
    "evidence_key": "Key (at least 32 characters) signing the evidence link on every card (`/evidence?token=...`). Empty: `cds-service "
                    "serve` makes a random one per start (links then end at a restart; several instances need one shared key); an app "
                    "built without a key adds no links.",
    "evidence_link_seconds": "How long an evidence link stays valid (60 to 604800).",
    "strict_validation": "Validate every prefetch resource with the full fhir.resources R4B models "
                         "(slow; the lean models are always used).",
    "log_level": "Python log level (`DEBUG`, `INFO`, `WARNING`, ...).",
    "log_format": "`text` (one line per record, ISO UTC time) or `json` (one JSON object per line: time, level, logger, message; hook "
                  "calls add service, hookInstance, status, latencyMs, cards). gunicorn's access and error logs use the same format.",
    "metrics_port": "Prometheus metrics: `0` serves `GET /metrics` on the service port behind the client authentication; a port number "
                    "serves them there instead (all workers, no authentication: keep it on the cluster network).",
    "jwks_cache_seconds": "How long a fetched JWK Set is cached.",
    "jwks_refresh_min_seconds": "Minimum gap between JWK Set refreshes triggered by an unknown `kid`.",
    "jwt_max_lifetime_seconds": "Longest client JWT lifetime accepted (`exp` - now).",
    "jwks_stale_grace_seconds": "After the cache time, a JWK Set is still used this long while one background refresh runs "
                                "(its host failing).",
    "fetch_max_page_bytes": "Largest FHIR answer (one page) read from `fhirServer`; a larger one is reported as a data gap, not read.",
    "fetch_max_call_bytes": "Most bytes read from `fhirServer` for one hook call, all keys and pages together.",
    "feedback_max_items": "Most feedback items in one feedback call (413 above).",
    "audit_spool_dir": "Directory of the audit spool (one append-only file per worker, shipped to the database by the writer); empty = "
                       "`<SQLite file>.spool`, or `cds-audit-spool/` in the working directory for PostgreSQL.",
    "audit_spool_fsync": "When a spooled audit record is fsynced: `always` (before each response), `interval` (every 0.2 s by the "
                         "writer; a killed process loses nothing) or `off` (the OS decides).",
    "worker_class": "`cds-service serve` worker model: `buffered` (threads; a request is read whole without holding a thread, within the "
                    "header/body deadlines), `gthread` or `sync` (gunicorn's).",
    "worker_threads": "Threads per worker (`buffered`, `gthread`).",
    "worker_keepalive_seconds": "How long an idle client connection is kept open between calls (`buffered`, `gthread`); 0 = one call per "
                                "connection. An idle kept-alive connection holds no thread in the `buffered` worker.",
    "request_header_timeout_seconds": "`buffered` workers: a connection must send its request headers within this time "
                                      "(else 408 and closed).",
    "request_body_timeout_seconds": "`buffered` workers: the whole request body must arrive within this time after the headers "
                                    "(else 408 and closed).",
}

CONFIG_MARK = "config"
RULES_MARK = "rules"


def _source_comment(name: str) -> str:
    """The comment next to (or the comment block just above) a field in config.py."""
    lines = inspect.getsource(Settings).splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"\s+{name}\s*:", line):
            if "#" in line:
                return line.split("#", 1)[1].strip()
            block: list[str] = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#"):
                block.insert(0, lines[j].strip("# ").strip())
                j -= 1
            return " ".join(block)
    return ""


def _default(f: Field[Any]) -> str:
    if f.name == "hooks_dir":
        return "`hooks/` of the checkout, else the copy shipped in the package"
    if f.name == "workers":
        return "number of CPUs"
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        raise ValueError(f"{ENV_PREFIX}{f.name.upper()} has no default")
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "(empty)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if value == "":
        return "(empty)"
    return f"`{value}`"


def config_table() -> str:
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for f in fields(Settings):
        meaning = MEANINGS.get(f.name) or _source_comment(f.name)
        if not meaning:
            raise ValueError(f"{ENV_PREFIX}{f.name.upper()} has no description: add it to MEANINGS in {__file__}")
        rows.append(f"| `{ENV_PREFIX}{f.name.upper()}` | {_default(f)} | {meaning.replace('|', '/')} |")
    return "\n".join(rows)


def indicator_policy(rule: str) -> str:
    """A rule's indicator policy from the knowledge (knowledge.yaml ``indicators``): each case's level, when it
    applies, the thresholds and policies deciding it (value and unit) and the grading source."""
    from ..knowledge import load_knowledge
    from ..rules.base import display_unit

    k = load_knowledge()
    cases = []
    for ic in k.model.indicators.get(rule, {}).values():
        numbers = []
        for key, table in [(t, k.model.thresholds) for t in ic.thresholds] + [(p, k.model.policies) for p in ic.policies]:
            t = table[key]
            unit = "" if t.unit in ("", "1") else f" {display_unit(t.unit)}"
            numbers.append(f"`{key}` = {t.value}{unit}")
        src = k.source(ic.source)
        cases.append(f"**{ic.level}**: {ic.when}" + (f" ({'; '.join(numbers)})" if numbers else "")
                     + f"; source: [{ic.source}]({src.url})")
    return "<br>".join(cases) if cases else "(no indicator policy)"


def rules_table() -> str:
    from ..rules import RULES

    rows = ["| Topic code (`source.topic.code`) | Card | Runs on | Fires when | Indicator (knowledge `indicators`) |",
            "| --- | --- | --- | --- | --- |"]
    for r in RULES:
        doc = " ".join((inspect.getdoc(r.evaluate) or "").split("\n\n")[0].split())
        hooks = "patient-view; order hooks when the drafted orders make it relevant" if r.scope == "patient" \
            else "order-select, order-sign"
        rows.append(f"| `{r.id}` | {r.title} | {hooks} | {doc.replace('|', '/')} | {indicator_policy(r.id).replace('|', '/')} |")
    rows.append("| `data-gaps` | Advice based on partial data | every hook | Some prefetch key or entry could not be read: "
                f"lists what is missing (never guessed around). | {indicator_policy('data-gaps')} |")
    return "\n".join(rows)


def _section(mark: str, body: str) -> str:
    return f"<!-- BEGIN GENERATED {mark}: python -m cds_service.kit.readme -->\n{body}\n<!-- END GENERATED {mark} -->"


def _replace_section(text: str, mark: str, body: str) -> str:
    pattern = re.compile(rf"<!-- BEGIN GENERATED {mark}:.*?-->.*?<!-- END GENERATED {mark} -->", re.S)
    if not pattern.search(text):
        raise ValueError(f"README has no generated section {mark!r}")
    section = _section(mark, body)
    return pattern.sub(lambda _m: section, text)  # a function: the section is not a template (no backslash escapes)


def render(text: str) -> str:
    for mark, body in ((CONFIG_MARK, config_table()), (RULES_MARK, rules_table())):
        text = _replace_section(text, mark, body)
    return text


def main(argv: list[str]) -> int:
    current = README.read_text(encoding="utf-8")
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print("README.md is out of date: run python -m cds_service.kit.readme", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        README.write_text(fresh, encoding="utf-8")
        print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
