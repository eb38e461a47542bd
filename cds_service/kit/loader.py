"""Load fixture transaction bundles into a FHIR server, idempotently (PUT with stable ids).

Used by ``cds-service fixtures load`` and the integration tests. Talks plain FHIR REST:
``GET /metadata`` (wait + capability), ``POST [base]`` with a transaction Bundle, or one
``PUT [base]/Type/id`` per entry when the server does not support transactions.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from ..media import FHIR_JSON


class LoadError(Exception):
    """The server is unreachable, or rejected a bundle (message carries its OperationOutcome text)."""


@dataclass
class ScenarioLoad:
    """What one scenario put on the server."""

    scenario: str
    counts: dict[str, int]  # resource type -> entries loaded
    mode: str  # "transaction" | "individual PUTs"
    created: int = 0
    updated: int = 0
    ids: dict[str, list[str]] = field(default_factory=dict)  # resource type -> ids

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        kinds = ", ".join(f"{t} {n}" for t, n in sorted(self.counts.items()))
        return (f"{self.scenario}: {self.total} resources ({kinds}) via {self.mode}: "
                f"{self.created} created, {self.updated} updated/unchanged")


def operation_outcome_text(body: Any) -> str:
    """The diagnostics/details text of an OperationOutcome (or '' when it is not one)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code") or ""
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        parts.append(f"[{issue.get('severity', '?')}] {text}" + (f" (at {where})" if where else ""))
    return "; ".join(parts)


def put_entries(bundle: dict[str, Any], scenario: str = "") -> list[tuple[str, str, dict[str, Any]]]:
    """(type, id, resource) for every entry; refuses anything that is not an idempotent PUT Type/id."""
    label = scenario or "bundle"
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        raise LoadError(f"{label}: not a FHIR transaction Bundle")
    out = []
    for i, entry in enumerate(bundle.get("entry") or []):
        res = (entry or {}).get("resource") or {}
        req = (entry or {}).get("request") or {}
        method, url = req.get("method"), str(req.get("url") or "")
        rtype, rid = res.get("resourceType"), res.get("id")
        if method != "PUT" or url != f"{rtype}/{rid}" or not isinstance(rtype, str) or not isinstance(rid, str):
            raise LoadError(f"{label}: entry {i} is {method} {url!r}, expected PUT {rtype}/{rid} "
                            "(stable ids keep loading idempotent)")
        out.append((rtype, rid, res))
    if not out:
        raise LoadError(f"{label}: the bundle has no entries")
    return out


class FixtureLoader:
    """One FHIR server: wait for it, learn whether it takes transactions, PUT bundles, count resources."""

    def __init__(self, base: str, *, token: str | None = None, timeout: float = 60.0,
                 session: requests.Session | None = None, log: Callable[[str], None] = lambda _m: None):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.trust_env = False
        self.headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.log = log
        self.capability: dict[str, Any] | None = None

    # ------------------------------------------------------------------ server
    def wait_for_metadata(self, wait_seconds: float = 0.0, poll_seconds: float = 2.0) -> dict[str, Any]:
        """GET /metadata until it answers 200 with a CapabilityStatement, or the wait runs out."""
        deadline = time.monotonic() + max(0.0, wait_seconds)
        announced = False
        while True:
            problem = ""
            try:
                resp = self.session.get(f"{self.base}/metadata", headers={"Accept": FHIR_JSON}, timeout=10)
                body = _json(resp)
                if resp.status_code == 200 and isinstance(body, dict) and body.get("resourceType") == "CapabilityStatement":
                    self.capability = body
                    return body
                problem = f"HTTP {resp.status_code}" + (f": {operation_outcome_text(body)}" if operation_outcome_text(body) else "")
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {_first_line(exc)}"
            if time.monotonic() >= deadline:
                waited = f" after waiting {wait_seconds:.0f} s" if wait_seconds > 0 else ""
                raise LoadError(f"FHIR server {self.base} is not reachable{waited} (GET /metadata: {problem})")
            if not announced:
                self.log(f"waiting up to {wait_seconds:.0f} s for {self.base}/metadata ({problem})")
                announced = True
            time.sleep(min(poll_seconds, max(0.05, deadline - time.monotonic())))

    def supports_transaction(self) -> bool:
        cap = self.capability if self.capability is not None else self.wait_for_metadata(0)
        for rest in cap.get("rest") or []:
            if any(i.get("code") == "transaction" for i in rest.get("interaction") or [] if isinstance(i, dict)):
                return True
        return False

    def fhir_version(self) -> str:
        cap = self.capability if self.capability is not None else self.wait_for_metadata(0)
        return str(cap.get("fhirVersion") or "")

    # ------------------------------------------------------------------ load
    def load(self, scenario: str, bundle: dict[str, Any], *, transaction: bool | None = None) -> ScenarioLoad:
        entries = put_entries(bundle, scenario)
        if transaction is None:
            transaction = self.supports_transaction()
        counts = Counter(t for t, _, _ in entries)
        ids: dict[str, list[str]] = {}
        for t, rid, _ in entries:
            ids.setdefault(t, []).append(rid)
        result = ScenarioLoad(scenario, dict(counts), "transaction" if transaction else "individual PUTs", ids=ids)
        statuses = self._transaction(scenario, bundle) if transaction else self._individual(scenario, entries)
        result.created = sum(1 for s in statuses if s.startswith("201"))
        result.updated = len(statuses) - result.created
        return result

    def _transaction(self, scenario: str, bundle: dict[str, Any]) -> list[str]:
        resp = self._send("POST", self.base, bundle, scenario)
        body = _json(resp)
        if not (200 <= resp.status_code < 300) or not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise LoadError(f"{scenario}: the server rejected the transaction (HTTP {resp.status_code}): "
                            f"{operation_outcome_text(body) or _snippet(resp)}")
        statuses = []
        for i, entry in enumerate(body.get("entry") or []):
            status = str(((entry or {}).get("response") or {}).get("status") or "")
            if status[:1] != "2":
                outcome = operation_outcome_text(((entry or {}).get("response") or {}).get("outcome"))
                raise LoadError(f"{scenario}: entry {i} answered {status or 'no status'}: {outcome or 'no detail'}")
            statuses.append(status)
        return statuses

    def _individual(self, scenario: str, entries: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
        statuses = []
        for rtype, rid, res in entries:
            resp = self._send("PUT", f"{self.base}/{rtype}/{quote(rid, safe='')}", res, scenario)
            if not 200 <= resp.status_code < 300:
                raise LoadError(f"{scenario}: PUT {rtype}/{rid} was rejected (HTTP {resp.status_code}): "
                                f"{operation_outcome_text(_json(resp)) or _snippet(resp)}")
            statuses.append(str(resp.status_code))
        return statuses

    def _send(self, method: str, url: str, body: dict[str, Any], scenario: str) -> requests.Response:
        try:
            return self.session.request(method, url, json=body, headers=self.headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise LoadError(f"{scenario}: {method} {url} failed: {type(exc).__name__}: {_first_line(exc)}") from None

    # ------------------------------------------------------------------ counting
    def count(self, rtype: str, **params: str) -> int:
        """Number of ``rtype`` resources matching ``params`` (``_summary=count``)."""
        query = {**params, "_summary": "count"}
        try:
            resp = self.session.get(f"{self.base}/{rtype}", params=query, headers={"Accept": FHIR_JSON}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise LoadError(f"count {rtype}: {type(exc).__name__}: {_first_line(exc)}") from None
        body = _json(resp)
        if resp.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("total"), int):
            raise LoadError(f"count {rtype} (HTTP {resp.status_code}): {operation_outcome_text(body) or _snippet(resp)}")
        return body["total"]

    def counts(self, types: Iterable[str]) -> dict[str, int]:
        """Server-wide totals per resource type."""
        return {t: self.count(t) for t in sorted(set(types))}

    def read(self, rtype: str, rid: str) -> dict[str, Any]:
        resp = self.session.get(f"{self.base}/{rtype}/{quote(rid, safe='')}", headers={"Accept": FHIR_JSON}, timeout=self.timeout)
        body = _json(resp)
        if resp.status_code != 200 or not isinstance(body, dict):
            raise LoadError(f"read {rtype}/{rid} (HTTP {resp.status_code}): {operation_outcome_text(body) or _snippet(resp)}")
        return body


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _snippet(resp: requests.Response) -> str:
    text = (resp.text or "").strip().replace("\n", " ")
    return text[:300] or "empty body"


def _first_line(exc: Exception) -> str:
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.Timeout):
        return "cannot connect (refused, unknown host or network down)"
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    return str(exc).splitlines()[0][:200] if str(exc) else ""
