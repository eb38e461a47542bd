"""Golden responses (tests/service/golden/) hold a placeholder where the knowledge version stands: the writer puts
it in, readers put the current version back, so a knowledge version bump rewrites no golden."""
from __future__ import annotations

import json
from pathlib import Path

KNOWLEDGE_VERSION = "<knowledge-version>"


def golden_text(response: dict) -> str:
    """The response pretty-printed with sorted keys; each card's Markdown ``detail`` as a list of its lines
    (lossless: joined with newlines it is the detail sent) so a reviewer reads it line by line."""
    shown = json.loads(json.dumps(response))
    for card in shown["cards"]:
        card["detail"] = card["detail"].split("\n")
    return json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_golden(path: Path, text: str, version: str) -> None:
    path.write_text(text.replace(version, KNOWLEDGE_VERSION), encoding="utf-8")


def read_golden(path: Path, version: str) -> str:
    """A golden file's text with the current knowledge version in place of the placeholder."""
    return path.read_text(encoding="utf-8").replace(KNOWLEDGE_VERSION, version)
