"""Reading a CDS Hooks card as sent (a JSON object), written once for everything that reads stored cards."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def card_topic(card: Mapping[str, Any]) -> str:
    """The card's ``source.topic.code``: the id of the rule that made it ('' when the card has none)."""
    return str(((card.get("source") or {}).get("topic") or {}).get("code") or "")
