"""The one component that reads an EHR's FHIR server: parallel GETs under one deadline.

Policy: per-call timeouts never longer than what is left of the request's deadline; GETs retried
on 502/503/504 (and connection errors) a bounded number of times; ``next`` links followed only under
the ``fhirServer`` base path (same origin) and up to a page limit; the bearer token goes only there
and is never logged. Bounded: bytes per page and per hook call; at the deadline every read still in
flight is cut off. No state is shared between calls (no cookies kept). Private, loopback and
link-local addresses are refused after name resolution unless allowed explicitly (``AddressPolicy``);
the caller then sees the same "unreachable" text as for a closed port, the log has the detail.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exceptions
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from ..media import FHIR_JSON
from .deadline import CONNECT_TIMEOUT_CAP, REQUEST_FLOOR, Deadline

log = logging.getLogger(__name__)

_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fhir-fetch")
MAX_ANSWER_BYTES = 4 * 2**20  # default of CDS_FETCH_MAX_PAGE_BYTES: one page; beyond this the key is reported, not read
MAX_CALL_BYTES = 8 * 2**20  # default of CDS_FETCH_MAX_CALL_BYTES: every key and page of one hook call
UNREACHABLE = "FHIR server unreachable"  # the one text a caller sees for every connection-level failure
_CHUNK = 64 * 1024


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


class ByteBudget:
    """Bytes one hook call may still read from the FHIR server (all keys and pages together)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            self.used += n
            return self.used <= self.limit


@dataclass(frozen=True)
class AddressPolicy:
    """Which fhirServer the service reads from, and which addresses its host may resolve to.

    The URL (``server_refusal``): a plain base URL, https unless ``allow_http`` (CDS_ALLOW_HTTP_FHIR), and one
    of ``allowed_servers`` when that is not empty (CDS_FHIR_SERVER_ALLOWLIST).
    The address (``refusal``): public (globally routable) addresses are always allowed. Loopback and private
    networks only with ``allow_private`` (development: CDS_ALLOW_HTTP_FHIR). Link-local (cloud metadata),
    unspecified, multicast and reserved addresses never, except for ``allowed_hosts`` (the hosts of the
    allowlist), which may resolve to anything: the operator named them.
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    allow_http: bool = False
    allowed_servers: frozenset[str] = frozenset()  # base URLs without a trailing slash

    @classmethod
    def from_settings(cls, allow_http_fhir: bool, allowlist: Iterable[str]) -> AddressPolicy:
        allowlist = tuple(allowlist)
        hosts = frozenset((urlsplit(u).hostname or "").lower() for u in allowlist) - {""}
        return cls(allow_private=allow_http_fhir, allowed_hosts=hosts, allow_http=allow_http_fhir,
                   allowed_servers=frozenset(u.rstrip("/") for u in allowlist))

    def server_refusal(self, fhir_server: str | None) -> str | None:
        """None when data may be fetched from ``fhir_server``; otherwise why not (shown to the caller)."""
        if not fhir_server:
            return "no fhirServer was given to fetch it from"
        parts = urlsplit(fhir_server)
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment \
                or has_dot_segment(parts.path):
            return "fhirServer must be a plain base URL (no user info, query, fragment or dot segments)"
        if parts.scheme != "https" and not self.allow_http:
            return "fhirServer is not https (CDS_ALLOW_HTTP_FHIR is off)"
        if self.allowed_servers and fhir_server.rstrip("/") not in self.allowed_servers:
            return "fhirServer is not on the configured allowlist"
        return None

    def refusal(self, host: str, address: str) -> str | None:
        """None when ``host`` may be reached at ``address``; otherwise why not (for the log)."""
        if host.lower().rstrip(".") in self.allowed_hosts:
            return None
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved:
            return f"{ip} is a link-local, unspecified, multicast or reserved address"
        if not ip.is_global and not self.allow_private:
            return f"{ip} is a loopback or private address (CDS_ALLOW_HTTP_FHIR is off and the host is not on the allowlist)"
        return None


class AddressRefused(urllib3_exceptions.HTTPError):
    """The host resolves to an address the policy refuses (not a connection error: never retried)."""


class _GuardedConnection:
    """Mixin for urllib3 connections: resolve once, check every address, connect to a checked one
    (no second lookup, so DNS rebinding cannot swap the address after the check)."""

    address_policy: AddressPolicy | None = None
    # attributes of the urllib3 HTTPConnection this is mixed into (declared for the type checker only)
    host: str
    port: int
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        policy = self.address_policy
        if policy is None:
            return super()._new_conn()  # type: ignore[misc]
        name = self._dns_host
        try:
            infos = socket.getaddrinfo(name.strip("[]"), self.port, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            # arg-type: self is an HTTPConnection at run time (the mixin is only used combined with one)
            raise urllib3_exceptions.NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))  # the IP address strings
        for address in addresses:
            why = policy.refusal(self.host, address)
            if why:
                log.warning("fhirServer host %s refused: %s", self.host, why)
                raise AddressRefused(f"address refused: {why}")
        last: Exception | None = None
        for address in addresses:
            self._dns_host = address  # connect to the address just checked; Host header, SNI and cert use the name
            try:
                return super()._new_conn()  # type: ignore[misc]
            except urllib3_exceptions.NewConnectionError as exc:
                last = exc
            finally:
                self._dns_host = name
        raise last or urllib3_exceptions.NewConnectionError(self, "no address")  # type: ignore[arg-type]


def _guarded_pools(policy: AddressPolicy | None) -> dict[str, type]:
    http = type("GuardedHTTPConnection", (_GuardedConnection, HTTPConnection), {"address_policy": policy})
    https = type("GuardedHTTPSConnection", (_GuardedConnection, HTTPSConnection), {"address_policy": policy})
    return {"http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https})}


class NoCookies(requests.cookies.RequestsCookieJar):
    """Keeps no cookie: a cookie one caller's FHIR server sets is never sent on another caller's fetch."""

    def set_cookie(self, cookie: Any, *args: Any, **kwargs: Any) -> None:
        return None


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def has_dot_segment(path: str) -> bool:
    """True when a URL path has a ``.`` or ``..`` segment, percent-encoded or not."""
    return any(unquote(seg) in (".", "..") for seg in path.split("/"))


def under_base(url: str, base: str) -> bool:
    """True when ``url`` is on ``base``'s origin, below its path, without dot segments or user info."""
    u, b = urlsplit(url), urlsplit(base)
    if origin(url) != origin(base) or u.username is not None or u.password is not None:
        return False
    if has_dot_segment(u.path):
        return False
    base_path = b.path.rstrip("/")
    return u.path == base_path or u.path.startswith(base_path + "/")


class _FetchError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class FhirGateway:
    def __init__(self, *, call_timeout: float, retries: int, page_limit: int, session: requests.Session | None = None,
                 max_page_bytes: int = MAX_ANSWER_BYTES, max_call_bytes: int = MAX_CALL_BYTES,
                 address_policy: AddressPolicy | None = None):
        """``address_policy`` None: any address (tools reading a server their operator named); the engine always
        passes one, built from the settings."""
        self.call_timeout = call_timeout
        self.page_limit = page_limit
        self.max_page_bytes = max_page_bytes
        self.max_call_bytes = max_call_bytes
        self.session = session or self._session(retries, address_policy)

    @staticmethod
    def _session(retries: int, policy: AddressPolicy | None = None) -> requests.Session:
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
        adapter.poolmanager.pool_classes_by_scheme = _guarded_pools(policy)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        s.trust_env = False  # never route the EHR's token through an environment proxy
        s.cookies = NoCookies()
        return s

    def call_budget(self) -> ByteBudget:
        """A fresh byte budget for one hook call (pass it to every fetch_many of that call)."""
        return ByteBudget(self.max_call_bytes)

    # ------------------------------------------------------------------ public
    def fetch_many(self, base: str, token: str | None, queries: dict[str, str], deadline: Deadline,
                   budget: ByteBudget | None = None) -> dict[str, FetchResult]:
        """GET every query (relative to ``base``) in parallel; whatever is not done by the deadline fails,
        and its read is cut off (the socket is shut down), so no work outlives the call."""
        started = time.monotonic()
        deadline_at = deadline.at
        deadline_s = deadline_at - started  # what was left when the reads started (named in the timeout reason)
        call = _Call(deadline_at, budget or self.call_budget())
        futures: dict[str, Future[FetchResult]] = {
            key: _POOL.submit(self._fetch_one, key, base, token, query, call) for key, query in queries.items()
        }
        wait(list(futures.values()), timeout=max(0.0, deadline_at - time.monotonic()))
        call.cancel()
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
    def _fetch_one(self, key: str, base: str, token: str | None, query: str, call: _Call) -> FetchResult:
        started = time.monotonic()
        result = FetchResult(key)
        base_slash = base if base.endswith("/") else base + "/"
        merged: dict[str, Any] | None = None
        first_url = urljoin(base_slash, query)
        url: str | None = first_url
        if has_dot_segment(urlsplit(query).path) or not under_base(first_url, base_slash):
            log.warning("fetch %s: query %r does not stay under the fhirServer base path; not sent", key, query[:200])
            url, result.error = None, "the query is not a path under the fhirServer base"
        try:
            while url:
                if not under_base(url, base_slash):
                    elsewhere = "another server" if origin(url) != origin(base_slash) else "outside the fhirServer base"
                    result.truncated, result.truncated_why = True, f"the next-page link points to {elsewhere}"
                    log.warning("fetch %s: next link to %s not followed", key, elsewhere)
                    break
                if result.pages >= self.page_limit:
                    result.truncated, result.truncated_why = True, f"the page limit ({self.page_limit}) was reached"
                    break
                remaining = call.deadline_at - time.monotonic()
                if remaining <= REQUEST_FLOOR or call.cancelled:
                    if merged is None:
                        result.error = "deadline reached before the query could be sent"
                    else:
                        result.truncated, result.truncated_why = True, "the deadline was reached"
                    break
                body, status, ms = self._get(url, token, min(self.call_timeout, remaining), call)
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

    def _get(self, url: str, token: str | None, timeout: float, call: _Call) -> tuple[Any, int, float]:
        headers = {"Accept": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        t0 = time.monotonic()
        try:
            resp = self.session.get(url, headers=headers, timeout=(min(timeout, CONNECT_TIMEOUT_CAP), timeout), allow_redirects=False,
                                    stream=True)
        except requests.ConnectTimeout as exc:
            log.warning("FHIR GET %s: connect timeout (%s)", _safe(url), exc)
            raise _FetchError(UNREACHABLE) from None
        except requests.Timeout:
            raise _FetchError(f"FHIR server did not answer within {timeout:.2f} s") from None
        except (requests.RequestException, urllib3_exceptions.HTTPError, OSError) as exc:
            log.warning("FHIR GET %s: %s: %s", _safe(url), type(exc).__name__, str(exc)[:300])
            raise _FetchError(UNREACHABLE) from None
        with resp:  # the body is read under the same wall-clock limit, then the connection is released
            content = _read_body(resp, min(t0 + timeout, call.deadline_at), self.max_page_bytes, call)
        ms = (time.monotonic() - t0) * 1000
        if resp.status_code in (401, 403):
            raise _FetchError(f"FHIR server refused access (HTTP {resp.status_code})", resp.status_code)
        if resp.status_code >= 400:
            raise _FetchError(f"FHIR server answered HTTP {resp.status_code}{_diagnostics(content)}", resp.status_code)
        if resp.status_code != 200:
            raise _FetchError(f"FHIR server answered HTTP {resp.status_code} (expected 200)", resp.status_code)
        if call.cancelled:
            raise _FetchError("the deadline was reached", resp.status_code)
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise _FetchError("FHIR server answered with something that is not JSON", resp.status_code) from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise _FetchError("FHIR server answered with JSON that is not a FHIR resource", resp.status_code)
        if body["resourceType"] == "OperationOutcome":
            raise _FetchError(f"FHIR server answered with an OperationOutcome{_oo_text(body)}", resp.status_code)
        return body, resp.status_code, ms


class _Call:
    """One fetch_many: its deadline, byte budget, and the answers being read (cut off on cancel)."""

    def __init__(self, deadline_at: float, budget: ByteBudget):
        self.deadline_at, self.budget = deadline_at, budget
        self._cancelled = threading.Event()
        self._reading: set[Any] = set()
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def reading(self, raw: Any, active: bool) -> None:
        with self._lock:
            (self._reading.add if active else self._reading.discard)(raw)

    def cancel(self) -> None:
        """Stop every read still in flight: a thread blocked in recv() wakes up at once."""
        self._cancelled.set()
        with self._lock:
            reading = list(self._reading)
        for raw in reading:
            with suppress(Exception):  # already released or closed
                raw.shutdown()


def _read_body(resp: requests.Response, stop_at: float, max_bytes: int, call: _Call) -> bytes:
    """The whole body, unless it takes past ``stop_at``, exceeds ``max_bytes`` or the call's byte budget,
    or the call is cancelled (per-read socket timeouts alone never fire on a server that keeps sending)."""
    raw = resp.raw
    read = getattr(raw, "read1", None) or raw.read
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _FetchError(f"FHIR server answer exceeds {max_bytes // 2**10} KiB", resp.status_code)
    parts: list[bytes] = []
    size = 0
    call.reading(raw, True)
    try:
        while True:
            if call.cancelled or time.monotonic() > stop_at:
                raise _FetchError("FHIR server did not finish its answer in time", resp.status_code)
            chunk = read(_CHUNK, decode_content=True)
            if not chunk:
                if call.cancelled:  # the socket was shut down under us: what we have is not the whole answer
                    raise _FetchError("FHIR server did not finish its answer in time", resp.status_code)
                return b"".join(parts)
            size += len(chunk)
            if size > max_bytes:
                raise _FetchError(f"FHIR server answer exceeds {max_bytes // 2**10} KiB", resp.status_code)
            if not call.budget.take(len(chunk)):
                raise _FetchError(f"the answers for this call exceed {call.budget.limit // 2**10} KiB", resp.status_code)
            parts.append(chunk)
    except (requests.RequestException, urllib3_exceptions.HTTPError, OSError, ValueError) as exc:
        if call.cancelled:
            raise _FetchError("FHIR server did not finish its answer in time", resp.status_code) from None
        raise _FetchError(f"FHIR server answer could not be read ({type(exc).__name__})", resp.status_code) from None
    finally:
        call.reading(raw, False)


def _safe(url: str) -> str:
    """A URL for the log: scheme, host, port and path (no query: it may carry search values)."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.hostname}{':' + str(p.port) if p.port else ''}{p.path}"


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
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return ""
    return _oo_text(body) if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else ""
