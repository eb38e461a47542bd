"""An EHR stand-in: discovery, request building (with or without prefetch), client JWT, the call, a card table.

It behaves like a CDS client: it reads the service's discovery, renders the prefetch templates
against the request context, GETs them from the FHIR server (with the bearer token it would hand
the service), optionally signs a client JWT, and calls the service over HTTP or in-process.
"""
from __future__ import annotations

import json
import secrets
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..definitions import ORDER_HOOKS
from ..media import FHIR_JSON
from ..prefetch.deadline import Deadline
from ..prefetch.gateway import FhirGateway
from ..prefetch.templates import TemplateError, render
from ..protocol.card import card_topic
from ..services import get_services

DEFAULT_USER = "Practitioner/example"
FHIR_SCOPES = ("patient/Patient.read", "patient/Observation.read", "patient/MedicationRequest.read",
               "patient/MedicationStatement.read", "patient/Condition.read", "patient/Medication.read")


class StandInError(Exception):
    """Something the user asked for cannot be done (bad file, unknown hook, service unreachable)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the service's HTTP status, when it answered


@dataclass
class BuiltRequest:
    service: dict[str, Any]  # the discovery entry
    body: dict[str, Any]
    prefetched: list[str] = field(default_factory=list)  # keys sent in prefetch
    not_prefetched: dict[str, str] = field(default_factory=dict)  # key -> why it was left out


@dataclass
class CallResult:
    status: int
    body: Any
    elapsed_ms: float
    url: str


# ---------------------------------------------------------------------- client JWT
def sign_client_jwt(key_file: str | Path, *, issuer: str, kid: str, audience: str, subject: str | None = None,
                    lifetime_seconds: int = 300, jku: str | None = None, tenant: str | None = None) -> str:
    """A CDS Hooks 2.0 client JWT (iss, sub, aud, exp, iat, jti; kid header) signed with a PEM private key.

    ES384 for an EC key, RS384 for an RSA key (the algorithms the spec names).
    """
    try:
        pem = Path(key_file).read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise StandInError(f"{key_file}: not a readable unencrypted PEM private key ({exc})") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = "ES384"
    elif isinstance(key, rsa.RSAPrivateKey):
        alg = "RS384"
    else:
        raise StandInError(f"{key_file}: need an EC (ES384) or RSA (RS384) private key, not {type(key).__name__}")
    now = int(time.time())
    claims: dict[str, Any] = {"iss": issuer, "sub": subject or issuer, "aud": audience, "iat": now,
                              "exp": now + lifetime_seconds, "jti": str(uuid.uuid4())}
    if tenant:
        claims["tenant"] = tenant
    headers = {"kid": kid, "typ": "JWT"}
    if jku:
        headers["jku"] = jku
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


# ---------------------------------------------------------------------- the stand-in
class EhrStandIn:
    """Calls a running service (``service_url``) or a Flask app in-process (``app``).

    ``signer(audience) -> JWT``, when given, signs every call (discovery included) for its URL.
    ``service_fhir_base`` is the ``fhirServer`` sent to the service when it reaches the FHIR server
    by another address than the stand-in does (e.g. inside docker compose); default ``fhir_base``.
    """

    def __init__(self, *, fhir_base: str, service_url: str | None = None, app: Any = None,
                 fhir_token: str | None = None, timeout: float = 30.0,
                 signer: Callable[[str], str] | None = None, service_fhir_base: str | None = None):
        if (service_url is None) == (app is None):
            raise ValueError("give exactly one of service_url or app")
        self.fhir_base = fhir_base.rstrip("/")
        self.service_fhir_base = (service_fhir_base or fhir_base).rstrip("/")
        self.service_url = service_url.rstrip("/") if service_url else None
        self.app = app
        self.client = app.test_client() if app is not None else None
        self.fhir_token = fhir_token or f"standin-{secrets.token_urlsafe(16)}"
        self.timeout = timeout
        self.signer = signer
        self.session = requests.Session()
        self.session.trust_env = False
        self._discovery: dict[str, Any] | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def base_url(self) -> str:
        """The service base URL a JWT audience is built from."""
        if self.service_url:
            return self.service_url
        public = get_services(self.app).settings.public_base_url
        return public.rstrip("/") if public else "http://localhost"

    def endpoint(self, service_id: str) -> str:
        return f"{self.base_url}/cds-services/{service_id}"

    # ------------------------------------------------------------------ the FHIR server
    def check_fhir_base(self) -> str:
        """GET [base]/metadata before anything else: a wrong --fhir-base is named, not met later as odd gaps.
        Returns the server's fhirVersion."""
        url = f"{self.fhir_base}/metadata"
        hint = ("check --fhir-base (the FHIR base URL, e.g. http://127.0.0.1:8089/fhir; "
                "`bash scripts/fhir-server.sh start` runs a test server)")
        try:
            resp = self.session.get(url, headers={"Accept": FHIR_JSON}, timeout=min(self.timeout, 10.0))
        except requests.RequestException as exc:
            raise StandInError(f"FHIR server {self.fhir_base}: cannot connect ({type(exc).__name__}); {hint}") from None
        if resp.status_code != 200:
            raise StandInError(f"FHIR server {self.fhir_base}: GET /metadata answered HTTP {resp.status_code}; {hint}")
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("resourceType") != "CapabilityStatement":
            raise StandInError(f"FHIR server {self.fhir_base}: GET /metadata is not a FHIR CapabilityStatement; {hint}")
        return str(body.get("fhirVersion") or "")

    # ------------------------------------------------------------------ discovery
    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            status, body, _ = self._http("GET", "/cds-services", None, self._auth(self.base_url + "/cds-services"))
            if status != 200 or not isinstance(body, dict) or not isinstance(body.get("services"), list):
                raise StandInError(f"discovery at {self.base_url}/cds-services answered HTTP {status}: {_short(body)}",
                                   status)
            self._discovery = body
        return self._discovery

    def service_for(self, hook: str, service_id: str | None = None) -> dict[str, Any]:
        services = self.discovery()["services"]
        match = [s for s in services if (s.get("id") == service_id if service_id else s.get("hook") == hook)]
        if not match:
            known = ", ".join(f"{s.get('id')} ({s.get('hook')})" for s in services)
            raise StandInError(f"no service for {service_id or 'hook ' + hook} in discovery; it lists: {known}")
        if match[0].get("hook") != hook:
            raise StandInError(f"service {service_id} answers {match[0].get('hook')}, not {hook}")
        return match[0]

    # ------------------------------------------------------------------ request
    def fhir_authorization(self) -> dict[str, Any]:
        return {"access_token": self.fhir_token, "token_type": "Bearer", "expires_in": 300,
                "scope": " ".join(FHIR_SCOPES), "subject": "cds-service"}

    def build_request(self, hook: str, patient_id: str, *, service_id: str | None = None, user_id: str = DEFAULT_USER,
                      encounter_id: str | None = None, draft_orders: dict[str, Any] | None = None,
                      selections: Iterable[str] = (), prefetch: bool = True, send_fhir_server: bool = True) -> BuiltRequest:
        service = self.service_for(hook, service_id)
        context: dict[str, Any] = {"userId": user_id, "patientId": patient_id}
        if encounter_id:
            context["encounterId"] = encounter_id
        if hook in ORDER_HOOKS:
            if draft_orders is None:
                raise StandInError(f"{hook} needs draft orders (--draft-orders FILE)")
            context["draftOrders"] = draft_orders
        if hook == "order-select":
            context["selections"] = list(selections) or default_selections(draft_orders or {})
        body: dict[str, Any] = {"hookInstance": str(uuid.uuid4()), "hook": hook, "context": context}
        built = BuiltRequest(service, body)
        if send_fhir_server or not prefetch:
            body["fhirServer"] = self.service_fhir_base
            body["fhirAuthorization"] = self.fhir_authorization()
        if prefetch:
            body["prefetch"] = self.render_prefetch(service, context, built)
        return built

    def render_prefetch(self, service: dict[str, Any], context: dict[str, Any], built: BuiltRequest) -> dict[str, Any]:
        """Render each discovery template against the context and GET it from the FHIR server."""
        queries: dict[str, str] = {}
        for key, template in (service.get("prefetch") or {}).items():
            try:
                queries[key] = render(template, context)
            except TemplateError as exc:
                built.not_prefetched[key] = str(exc)
        if not queries:
            return {}
        gateway = FhirGateway(call_timeout=self.timeout, retries=2, page_limit=20)
        results = gateway.fetch_many(self.fhir_base, self.fhir_token, queries, Deadline.start(self.timeout))
        out: dict[str, Any] = {}
        for key, res in results.items():
            if res.ok:
                out[key] = res.data
                built.prefetched.append(key)
            else:
                built.not_prefetched[key] = res.error or "could not be read"
        return out

    # ------------------------------------------------------------------ call
    def call(self, built: BuiltRequest, *, client_jwt: str | None = None) -> CallResult:
        sid = built.service["id"]
        headers = {"Authorization": f"Bearer {client_jwt}"} if client_jwt else self._auth(self.endpoint(sid))
        t0 = time.perf_counter()
        status, body, url = self._http("POST", f"/cds-services/{sid}", built.body, headers)
        return CallResult(status, body, (time.perf_counter() - t0) * 1000, url)

    def _auth(self, audience: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.signer(audience)}"} if self.signer else {}

    def _http(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, str]:
        if self.client is not None:
            resp = self.client.open(path, method=method, json=body, headers=headers)
            return resp.status_code, resp.get_json(silent=True), self.base_url + path
        url = self.service_url + path  # type: ignore[operator]
        try:
            resp = self.session.request(method, url, json=body, headers={"Accept": "application/json", **headers},
                                        timeout=self.timeout)
        except requests.RequestException as exc:
            raise StandInError(f"{method} {url} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        try:
            parsed = resp.json()
        except ValueError:
            parsed = resp.text
        return resp.status_code, parsed, url


# ---------------------------------------------------------------------- helpers
def read_draft_orders(path: str | Path) -> dict[str, Any]:
    """A draft-orders file: a Bundle, or a single order resource (wrapped in a collection Bundle)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StandInError(f"{path}: cannot read draft orders: {exc}") from None
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        return data
    if isinstance(data, dict) and isinstance(data.get("resourceType"), str):
        return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": data}]}
    raise StandInError(f"{path}: draft orders must be a FHIR Bundle or one FHIR resource")


def default_selections(draft_orders: dict[str, Any]) -> list[str]:
    """Every draft order as Type/id (what order-select means by selections)."""
    out = []
    for entry in draft_orders.get("entry") or []:
        res = (entry or {}).get("resource") or {}
        if isinstance(res.get("resourceType"), str) and isinstance(res.get("id"), str):
            out.append(f"{res['resourceType']}/{res['id']}")
    return out


def topic_codes(cards: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(card_topic(c) for c in cards)


def cards_table(cards: list[dict[str, Any]], width: int = 100) -> str:
    """The cards as a plain-text table: indicator, rule (topic code), summary, suggestions."""
    if not cards:
        return "No cards."
    rows = []
    for c in cards:
        rule = card_topic(c)
        sugg = "; ".join(s.get("label", "") for s in c.get("suggestions") or []) or "-"
        rows.append((c.get("indicator", ""), rule, c.get("summary", ""), sugg))
    w_ind = max(len("INDICATOR"), *(len(r[0]) for r in rows))
    w_rule = max(len("RULE"), *(len(r[1]) for r in rows))
    w_text = max(40, width - w_ind - w_rule - 4)
    lines = [f"{'INDICATOR':<{w_ind}}  {'RULE':<{w_rule}}  SUMMARY / SUGGESTIONS", "-" * (w_ind + w_rule + 4 + w_text)]
    for ind, rule, summary, sugg in rows:
        text = textwrap.wrap(summary, w_text) or [""]
        text += textwrap.wrap(f"suggestions: {sugg}", w_text, subsequent_indent="  ")
        lines.append(f"{ind:<{w_ind}}  {rule:<{w_rule}}  {text[0]}")
        lines.extend(f"{'':<{w_ind}}  {'':<{w_rule}}  {t}" for t in text[1:])
    lines.append(f"{len(cards)} card(s)")
    return "\n".join(lines)


def _short(body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    return (text or "")[:300]
