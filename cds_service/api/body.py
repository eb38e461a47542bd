"""Reading a JSON request body safely: type, size, encoding, nesting depth, number of values.

The shape check runs before ``json.loads`` in linear time and bounded extra memory whatever the
bytes (no regular-expression backtracking), so a hostile body cannot burn CPU or memory.
"""
from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

from flask import Request

from ..errors import MalformedJSON, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = {"application/json", "application/fhir+json"}
_STRUCTURE = bytes(range(256)).translate(None, b"[]{},")  # every byte except brackets and commas
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_CHUNK = 1 << 16
BYTES_PER_VALUE = 10  # at most max_bytes / 10 JSON values: bounds the parsed size (~80 bytes per value)
_BOM = "\ufeff"


def json_shape(raw: bytes, depth_limit: int | None = None) -> tuple[int, int]:
    """(maximum nesting depth, number of values) of a JSON text, strings skipped.

    Escapes are removed first (``\\\\`` then ``\\"``, left to right as JSON pairs them), so every
    remaining quote delimits a string; the text is then walked in chunks with the in-string state
    carried over. Stops early once ``depth_limit`` is exceeded.
    """
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    depth = deepest = 0
    values = 1
    in_string = False
    for start in range(0, len(text), _CHUNK):
        parts = text[start:start + _CHUNK].split(b'"')
        marks = b"".join(parts[1 if in_string else 0::2]).translate(None, _STRUCTURE)
        if len(parts) % 2 == 0:
            in_string = not in_string
        values += marks.count(b",") + marks.count(b"[") + marks.count(b"{")
        brackets = marks.replace(b",", b"")
        if brackets:
            levels = list(accumulate(map(_STEP.__getitem__, brackets), initial=depth))
            deepest, depth = max(deepest, max(levels)), levels[-1]
            if depth_limit is not None and deepest > depth_limit:
                break
    return deepest, values


def json_depth(raw: bytes, limit: int | None = None) -> int:
    """Maximum nesting depth of a JSON text (strings skipped); may stop counting above ``limit``."""
    return json_shape(raw, limit)[0]


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(request: Request, max_bytes: int, max_depth: int) -> Any:
    mimetype = (request.mimetype or "").lower()
    if mimetype not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type must be application/json (got {request.mimetype or 'none'})")
    charset = (request.mimetype_params.get("charset") or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("request body must be UTF-8 encoded JSON")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {max_bytes}")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) >= max_bytes and request.stream.read(1):  # werkzeug stops a chunked body at the limit silently
        raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"request body is not valid UTF-8 (byte {exc.start})") from None
    text = text.removeprefix(_BOM)  # RFC 8259 §8.1: a parser may ignore a byte order mark
    if not text.strip():
        raise MalformedJSON("request body is empty")
    depth, values = json_shape(raw, max_depth)
    if depth > max_depth:
        raise MalformedJSON(f"JSON nesting depth exceeds the limit of {max_depth}")
    max_values = max(10_000, max_bytes // BYTES_PER_VALUE)
    if values > max_values:
        raise PayloadTooLarge(f"request body holds about {values} JSON values; the limit is {max_values}")
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise MalformedJSON("JSON is nested too deeply") from None
    except ValueError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
