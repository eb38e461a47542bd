"""The one component that reads an EHR's FHIR server: parallel GETs under one deadline.

Policy: per-call timeouts never longer than what is left of the request's deadline; GETs retried
on 502/503/504 (and connection errors) a bounded number of times; ``next`` links followed only on
the same origin as ``fhirServer`` and up to a page limit; the bearer token goes only to that origin
and is never logged.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fhir-fetch")
FHIR_JSON = "application/fhir+json"
MAX_ANSWER_BYTES = 64 * 2**20  # one page of a FHIR answer; beyond this the key is reported, not read


@dataclass
class FetchResult:
    key: str
    data: Any = None  # resource or Bundle (pages merged) when ok
    error: str | None = None  # short, safe reason when not ok
    status: int | None = None
    pages: int = 0
    truncated: bool = False
    truncated_why: str = ""  # why later pages were not read
    elapsed_ms: float = 0.0
    calls: list[float] = field(default_factory=list)  # per-GET latency (ms)

    @property
    def ok(self) -> bool:
        return self.error is None


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class FhirGateway:
    def __init__(self, *, call_timeout: float, retries: int, page_limit: int, session: requests.Session | None = None):
        self.call_timeout = call_timeout
        self.page_limit = page_limit
        self.session = session or self._session(retries)

    @staticmethod
    def _session(retries: int) -> requests.Session:
        s = requests.Session()
        retry = Retry(
            total=retries,
            connect=retries,
            read=0,
            status=retries,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset({"GET"}),
            backoff_factor=0.05,
            respect_retry_after_header=False,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=8, pool_maxsize=32)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        s.trust_env = False  # never route the EHR's token through an environment proxy
        return s

    # ------------------------------------------------------------------ public
    def fetch_many(self, base: str, token: str | None, queries: dict[str, str], deadline_s: float) -> dict[str, FetchResult]:
        """GET every query (relative to ``base``) in parallel; whatever is not done by the deadline fails."""
        started = time.monotonic()
        deadline_at = started + deadline_s
        futures: dict[str, Future[FetchResult]] = {
            key: _POOL.submit(self._fetch_one, key, base, token, query, deadline_at) for key, query in queries.items()
        }
        wait(list(futures.values()), timeout=max(0.0, deadline_at - time.monotonic()))
        out: dict[str, FetchResult] = {}
        for key, fut in futures.items():
            if fut.done():
                try:
                    out[key] = fut.result()
                except Exception as exc:  # defensive: _fetch_one catches its own errors
                    log.exception("fetch %s failed unexpectedly", key)
                    out[key] = FetchResult(key, error=f"unexpected error ({type(exc).__name__})")
            else:
                fut.cancel()
                out[key] = FetchResult(key, error=f"no answer within the {deadline_s:.1f} s deadline",
                                       elapsed_ms=(time.monotonic() - started) * 1000)
        return out

    # ------------------------------------------------------------------ one key
    def _fetch_one(self, key: str, base: str, token: str | None, query: str, deadline_at: float) -> FetchResult:
        started = time.monotonic()
        result = FetchResult(key)
        base_slash = base if base.endswith("/") else base + "/"
        url: str | None = urljoin(base_slash, query)
        base_origin = origin(base_slash)
        merged: dict[str, Any] | None = None
        try:
            while url:
                if origin(url) != base_origin:
                    result.truncated, result.truncated_why = True, "the next-page link points to another server"
                    log.warning("fetch %s: next link to another origin not followed", key)
                    break
                if result.pages >= self.page_limit:
                    result.truncated, result.truncated_why = True, f"the page limit ({self.page_limit}) was reached"
                    break
                remaining = deadline_at - time.monotonic()
                if remaining <= 0.01:
                    if merged is None:
                        result.error = "deadline reached before the query could be sent"
                    else:
                        result.truncated, result.truncated_why = True, "the deadline was reached"
                    break
                body, status, ms = self._get(url, token, min(self.call_timeout, remaining))
                result.calls.append(ms)
                result.status = status
                result.pages += 1
                if isinstance(body, dict) and body.get("resourceType") == "Bundle":
                    if merged is None:
                        merged = {"resourceType": "Bundle", "type": body.get("type", "searchset"), "entry": []}
                    entries = body.get("entry") or []
                    merged["entry"].extend(entries if isinstance(entries, list) else [entries])
                    url = _next_link(body, url)
                else:
                    merged = body
                    url = None
        except _FetchError as exc:
            result.error = str(exc)
            result.status = exc.status
        result.data = merged if result.error is None else None
        if result.error is None and merged is None:
            result.error = "no data returned"
        result.elapsed_ms = (time.monotonic() - started) * 1000
        return result

    def _get(self, url: str, token: str | None, timeout: float) -> tuple[Any, int, float]:
        headers = {"Accept": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        t0 = time.monotonic()
        try:
            resp = self.session.get(url, headers=headers, timeout=(min(timeout, 1.0), timeout), allow_redirects=False,
                                    stream=True)
        except requests.Timeout:
            raise _FetchError(f"FHIR server did not answer within {timeout:.2f} s") from None
        except requests.RequestException as exc:
            raise _FetchError(f"FHIR server unreachable ({type(exc).__name__})") from None
        with resp:  # the body is read under the same wall-clock limit, then the connection is released
            content = _read_body(resp, t0 + timeout)
        ms = (time.monotonic() - t0) * 1000
        if resp.status_code in (401, 403):
            raise _FetchError(f"FHIR server refused access (HTTP {resp.status_code})", resp.status_code)
        if resp.status_code >= 400:
            raise _FetchError(f"FHIR server answered HTTP {resp.status_code}{_diagnostics(content)}", resp.status_code)
        if resp.status_code != 200:
            raise _FetchError(f"FHIR server answered HTTP {resp.status_code} (expected 200)", resp.status_code)
        try:
            body = json.loads(content)
        except ValueError:
            raise _FetchError("FHIR server answered with something that is not JSON", resp.status_code) from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise _FetchError("FHIR server answered with JSON that is not a FHIR resource", resp.status_code)
        if body["resourceType"] == "OperationOutcome":
            raise _FetchError(f"FHIR server answered with an OperationOutcome{_oo_text(body)}", resp.status_code)
        return body, resp.status_code, ms


def _read_body(resp: requests.Response, stop_at: float) -> bytes:
    """The whole body, unless it takes past ``stop_at`` or exceeds MAX_ANSWER_BYTES (per-read socket
    timeouts alone never fire on a server that keeps sending)."""
    raw = resp.raw
    read = getattr(raw, "read1", None) or raw.read
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            if time.monotonic() > stop_at:
                raise _FetchError("FHIR server did not finish its answer in time", resp.status_code)
            chunk = read(64 * 1024, decode_content=True)
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise _FetchError(f"FHIR server answer exceeds {MAX_ANSWER_BYTES // 2**20} MiB", resp.status_code)
            parts.append(chunk)
    except (requests.RequestException, urllib3_exceptions.HTTPError, OSError) as exc:
        raise _FetchError(f"FHIR server answer could not be read ({type(exc).__name__})", resp.status_code) from None


class _FetchError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _next_link(bundle: dict[str, Any], current: str) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            nxt = urljoin(current, link["url"])
            return nxt if nxt != current else None
    return None


def _oo_text(body: dict[str, Any]) -> str:
    for issue in body.get("issue") or []:
        if isinstance(issue, dict):
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
            if isinstance(text, str) and text:
                return f": {text[:200]}"
    return ""


def _diagnostics(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return ""
    return _oo_text(body) if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else ""
