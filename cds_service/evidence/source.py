"""The one place the evidence page reads the audit store (re-point it here when the store's layout changes)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..audit.queries import aware, invocation_dict, iter_invocations
from .tokens import CardRef

NEIGHBOURS = 20  # calls received within the same 2 ms looked at, at most


def load_card_evidence(store: Any, ref: CardRef) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the audited invocation with its record snapshot, the card) a link names, or None when not (yet) stored."""
    window = timedelta(milliseconds=1)
    with store.sessions() as session:
        for row in iter_invocations(session, since=ref.received_at - window, until=ref.received_at + window,
                                    limit=NEIGHBOURS):
            if aware(row.received_at) != ref.received_at:
                continue
            card = next((c for c in row.cards or [] if isinstance(c, dict) and c.get("uuid") == ref.card_uuid), None)
            if card is not None:
                return invocation_dict(row, snapshot=True), card
    return None
