"""The evidence page at /evidence?token=...: opened from a card's link, without the EHR's token.

Public (no client JWT): the signed, expiring, card-scoped token is the only credential, and the page reads
only the audit store. Every answer is ``no-store``; a refused token gets a 403 page with no patient data.
"""
from __future__ import annotations

import functools
import logging
import secrets
import time
from typing import Any

from flask import Blueprint, Flask, Response, render_template, request
from markupsafe import Markup

from ..evidence.source import load_card_evidence
from ..evidence.tokens import CardRef, EvidenceSigner, LinkRefused
from ..evidence.view import MED_GROUPS, WIDTH, build, num, source_ref
from ..services import get_services

bp = Blueprint("evidence", __name__, url_prefix="/evidence", template_folder="templates",
               static_folder="static", static_url_path="/static")
log = logging.getLogger(__name__)
LINK_LABEL = "Magnesium trend and evidence"
RECENT_SECONDS = 120  # a call this recent may still be in the audit writer's queue
WAITS = (0.05, 0.1, 0.2, 0.4, 0.8)  # bounded wait (1.55 s) for the background audit writer


def init_app(app: Flask) -> None:
    """Mount the page; links are added to cards only when an evidence key is configured (CDS_EVIDENCE_KEY)."""
    services = get_services(app)
    settings = services.settings
    app.register_blueprint(bp)
    if settings.evidence_key:
        services.evidence_signer = EvidenceSigner(settings.evidence_key, settings.evidence_link_seconds)
    else:
        services.evidence_signer = None
        log.info("CDS_EVIDENCE_KEY is not set: cards carry no evidence link")


def random_key() -> str:
    """A fresh evidence key (``serve`` uses one per start when none is configured)."""
    return secrets.token_urlsafe(32)


def evidence_link(card: dict[str, Any], received_at, base_url: str, signer: EvidenceSigner) -> dict[str, Any]:
    """The CDS Hooks link to the evidence page of ``card`` (audited with the call received at ``received_at``)."""
    token = signer.token(str(card.get("uuid", "")), received_at)
    return {"label": LINK_LABEL, "url": f"{base_url}/evidence?token={token}", "type": "absolute"}


def add_links(response: dict[str, Any], invocation: Any) -> dict[str, Any]:
    """The response with an evidence link on every card. Copies: the audited cards keep no token."""
    services = get_services()
    signer = services.evidence_signer
    cards = response.get("cards")
    if signer is None or not cards:
        return response
    settings = services.settings
    base = (settings.public_base_url or request.url_root).rstrip("/")
    try:
        linked = [{**c, "links": [*(c.get("links") or []), evidence_link(c, invocation.received_at, base, signer)]}
                  for c in cards]
    except Exception:  # a link is an extra: never lose the cards over it
        log.exception("could not add evidence links")
        return response
    return {**response, "cards": linked}


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                                   "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


def _page(template: str, status: int, **context: Any) -> Response:
    resp = Response(render_template(template, **context), status=status, mimetype="text/html")
    return resp


@bp.get("")
def page():
    s = get_services()
    signer = s.evidence_signer
    if signer is None:
        return _page("evidence_refused.html", 403, expired=False, reason="evidence links are not enabled")
    try:
        ref = signer.verify(request.args.get("token"))
    except LinkRefused as exc:
        log.info("evidence link refused: %s", exc.reason)
        return _page("evidence_refused.html", 403, expired=exc.expired, reason=exc.reason)
    found = _load(s.store, ref, signer)
    if found is None:
        age = signer.clock() - ref.received_at.timestamp()
        if age < RECENT_SECONDS:
            resp = _page("evidence_pending.html", 503)
            resp.headers["Retry-After"] = "2"
            return resp
        return _page("evidence_missing.html", 404)
    invocation, card = found
    evidence = build(invocation, card, s.knowledge)
    detail = Markup(_markdown().render(str(card.get("detail") or "")))
    return _page("evidence.html", 200, ev=evidence, detail=detail, width=WIDTH, groups=dict(MED_GROUPS),
                 expires=ref.expires_at, num=num, src=source_ref)


@functools.lru_cache(maxsize=1)
def _markdown():
    """The card's Markdown renderer (CommonMark, raw HTML off); built on first use, not at worker start."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False})


def _load(store: Any, ref: CardRef, signer: EvidenceSigner):
    """The audited card, waiting briefly (bounded) when the call is recent: the audit write is asynchronous."""
    found = load_card_evidence(store, ref)
    if found is not None or signer.clock() - ref.received_at.timestamp() >= RECENT_SECONDS:
        return found
    for delay in WAITS:
        time.sleep(delay)
        found = load_card_evidence(store, ref)
        if found is not None:
            return found
    return None
