"""One log format for the whole process (the service, gunicorn's error and access logs, libraries).

``CDS_LOG_FORMAT=text`` (default): ``2026-11-30T01:50:00.123Z INFO cds_service.api.hooks: message``.
``CDS_LOG_FORMAT=json``: one JSON object per line (python-json-logger) with ``time``, ``level``,
``logger``, ``message`` and whatever the call passed as ``extra`` (hook calls: service, hookInstance,
status, latencyMs, cards).

Query strings are cut from URLs that libraries log (urllib3's retry warnings name the whole FHIR
query, which carries the patient id): :class:`RedactQueries` on every handler.
"""
from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# what the service writes at INFO that an operator does not need at start-up (every worker migrates)
QUIET_AT_INFO = ("alembic",)
# a URL or path followed by a query string (urllib3 logs the path and query, without the host)
_QUERY = re.compile(r"((?:https?://|/)[^\s?'\"<>]*)\?[^\s'\"<>]*=[^\s'\"<>]*")


def _utc_iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """The text format with an ISO 8601 UTC timestamp."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _utc_iso(record.created)


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message (+ the record's ``extra`` fields)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                         json_ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _utc_iso(record.created)


def redact_queries(text: str) -> str:
    """``https://h/fhir/Observation?patient=p1&code=x`` -> ``https://h/fhir/Observation?[query redacted]``
    (also a bare path with a query, as urllib3's retry warnings print it)."""
    return _QUERY.sub(r"\1?[query redacted]", text)


class RedactQueries(logging.Filter):
    """Cut query strings from URLs in a record's message (retry warnings of urllib3 name the FHIR query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the logging module's to report
            return True
        redacted = redact_queries(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"CDS_LOG_FORMAT must be text or json, not {fmt!r}")
    return JsonLineFormatter() if fmt == "json" else TextFormatter()


def make_handler(fmt: str = "text") -> logging.Handler:
    """A stderr handler with our format and the query redaction (also used by gunicorn's log config)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RedactQueries())
    handler._cds = True  # type: ignore[attr-defined]
    return handler


def level_of(name: str) -> int:
    return getattr(logging, str(name).upper(), logging.INFO)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Like ``logging.basicConfig``: installs our handler on the root logger unless one is there already
    (pytest's, gunicorn's configuration from :func:`gunicorn_logconfig`), then quiets what is noisy at INFO."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(make_handler(fmt))
        root.setLevel(level_of(level))
    quiet_libraries(level)


def quiet_libraries(level: str) -> None:
    quiet = logging.DEBUG if level_of(level) <= logging.DEBUG else logging.WARNING
    for name in QUIET_AT_INFO:
        logging.getLogger(name).setLevel(quiet)


def gunicorn_logconfig(level: str, fmt: str) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its error and access loggers go through the root handler, in our format
    (so the access log gets a timestamp and, in JSON mode, is JSON like everything else)."""
    formatter(fmt)  # validates
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": logging.getLevelName(level_of(level)), "handlers": ["cds"]},
        "loggers": {
            "gunicorn.error": {"level": logging.getLevelName(level_of(level)), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
        "handlers": {"cds": {"()": "cds_service.logs.make_handler", "fmt": fmt}},
        "formatters": {},
    }
