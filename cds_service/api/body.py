"""Reading a JSON request body safely: type, size, encoding, nesting depth."""
from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from flask import Request

from ..errors import MalformedJSON, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = {"application/json", "application/fhir+json"}
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_KEEP = bytes(range(256)).translate(None, b"[]{}")  # every byte except brackets
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(raw: bytes) -> int:
    """Maximum nesting depth of a JSON text (strings skipped), computed at C speed."""
    brackets = _STRINGS.sub(b"", raw).translate(None, _KEEP)
    if not brackets:
        return 0
    return max(accumulate(_STEP[b] for b in brackets))


def read_json(request: Request, max_bytes: int, max_depth: int) -> Any:
    mimetype = (request.mimetype or "").lower()
    if mimetype not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type must be application/json (got {request.mimetype or 'none'})")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {max_bytes}")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
    charset = (request.mimetype_params.get("charset") or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("request body must be UTF-8 encoded JSON")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"request body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise MalformedJSON("request body is empty")
    depth = json_depth(raw)
    if depth > max_depth:
        raise MalformedJSON(f"JSON nesting depth {depth} exceeds the limit of {max_depth}")
    try:
        return json.loads(text)
    except RecursionError:
        raise MalformedJSON("JSON is nested too deeply") from None
    except ValueError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
