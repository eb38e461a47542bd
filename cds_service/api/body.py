"""Reading a JSON request body safely: type, size, encoding, nesting depth, number of values.

Every check is linear in the body size and bounded in extra memory whatever the bytes (no
regular-expression backtracking), so a hostile body cannot burn CPU or memory.
"""
from __future__ import annotations

from itertools import accumulate
from typing import Any

import msgspec
import orjson
from flask import Request

from ..errors import MalformedJSON, PayloadTooLarge, UnsupportedMediaType
from ..media import FHIR_JSON
from ..record.typed_observations import OBSERVATION_BUNDLE

JSON_TYPES = {"application/json", FHIR_JSON}
_STRUCTURE = bytes(range(256)).translate(None, b"[]{},")  # every byte except brackets and commas
_STEP = {ord("["): 1, ord("]"): -1}
_FOLD = bytes.maketrans(b"{}", b"[]")  # depth does not depend on the bracket kind
_PASS_CAP = 32  # beyond this many passes, count exactly with a running sum instead
BYTES_PER_VALUE = 10  # at most max_bytes / 10 JSON values: bounds the parsed size (~80 bytes per value)
_BOM = b"\xef\xbb\xbf"
MAX_DEPTH = 1024  # orjson's fixed nesting limit; deeper bodies are refused


def json_shape(raw: bytes) -> tuple[int, int]:
    """(maximum nesting depth, number of values) of a JSON text, strings skipped.

    Escapes are removed first (``\\\\`` then ``\\"``, left to right as JSON pairs them), so every
    remaining quote delimits a string; what lies outside strings is reduced to its brackets. Depth is the
    number of passes that strip innermost ``[]`` pairs (C-speed ``bytes.replace``); unbalanced or deep
    text falls back to one linear running sum.
    """
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = b"".join(text.split(b'"')[0::2]).translate(None, _STRUCTURE)
    values = 1 + marks.count(b",") + marks.count(b"[") + marks.count(b"{")
    brackets = marks.replace(b",", b"").translate(_FOLD)
    depth, rest = 0, brackets
    while rest:
        if depth >= _PASS_CAP:  # deep text: one linear running sum instead of more passes
            return _running_max(brackets), values
        shorter = rest.replace(b"[]", b"")
        if len(shorter) == len(rest):  # unbalanced: the parser will reject it; measure the open depth
            return _running_max(brackets), values
        rest, depth = shorter, depth + 1
    return depth, values


def _running_max(brackets: bytes) -> int:
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def read_json(request: Request, max_bytes: int, typed: bool = False) -> Any:
    """The request body as JSON, or a 4xx CDSError: 415 type/charset, 413 size or value count, 400 otherwise.

    Parsing is orjson's (linear, UTF-8 checked, NaN/Infinity refused, nesting capped at 1024 levels). Before
    parsing, a cheap upper bound on the number of values (commas and opening brackets, strings included) is
    taken; only a body over the limit gets the exact count (``json_shape``), so a hostile body cannot make
    the parsed form much larger than the bytes sent.

    With ``typed`` (hook calls, unless strict validation is on), a prefetched Bundle of clean Observations is
    decoded straight into typed structures (``decode_typed``); the answer is otherwise the same.
    """
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
    raw = raw.removeprefix(_BOM)  # RFC 8259 §8.1: a parser may ignore a byte order mark
    if not raw.strip():
        raise MalformedJSON("request body is empty")
    max_values = max(10_000, max_bytes // BYTES_PER_VALUE)
    if raw.count(b",") + raw.count(b"[") + raw.count(b"{") >= max_values:
        depth, values = json_shape(raw)
        if depth > MAX_DEPTH:
            raise MalformedJSON(f"JSON nesting depth exceeds the limit of {MAX_DEPTH}")
        if values > max_values:
            raise PayloadTooLarge(f"request body holds about {values} JSON values; the limit is {max_values}")
    if typed:
        body = decode_typed(raw)
        if body is not None:
            return body
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise MalformedJSON(f"JSON nesting depth exceeds the limit of {MAX_DEPTH}") from None
        if "UTF-8" in str(exc):
            raise MalformedJSON(f"request body is not valid UTF-8 JSON ({exc})") from None
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None


# ---------------------------------------------------------------------------------------------- typed decoding
_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, orjson.JSONDecodeError)


def decode_typed(raw: bytes) -> dict[str, Any] | None:
    """The body as ``orjson.loads`` would give it, except that each prefetched Bundle of clean Observations
    holds ``typed_observations.ObservationData`` in place of the resource dicts; None when the plain reading must decide.

    None (and the caller's plain reading, which gives the 4xx or the tolerant record) for a body plain JSON
    would refuse or read differently: not UTF-8, too deep (msgspec's recursion limit is below orjson's 1,024
    levels), not an object. Every value other than such a Bundle is read by orjson, as before. One difference
    remains, by design: a number out of double range inside an element of such an Observation that the
    service does not read is skipped with the element (orjson refuses the whole body); in an element it
    reads, the typed decoding refuses it too (typed_observations.Finite) and the plain reading answers.
    """
    if not raw.isascii():
        try:
            raw.decode("utf-8")  # msgspec does not check the strings it skips
        except UnicodeDecodeError:
            return None
    try:
        top = _TOP.decode(raw)
        body: dict[str, Any] = {}
        for key, value in top.items():
            body[key] = _prefetch(value) if key == "prefetch" else orjson.loads(memoryview(value))
        return body
    except _DECODE_ERRORS:
        return None


def _prefetch(raw: msgspec.Raw) -> Any:
    try:
        values = _TOP.decode(raw)
    except msgspec.ValidationError:  # not an object: plain
        return orjson.loads(memoryview(raw))
    out: dict[str, Any] = {}
    for key, value in values.items():
        try:  # fails on anything else (usually early: resourceType tends to come first)
            bundle = OBSERVATION_BUNDLE.decode(value)
        except msgspec.ValidationError:
            out[key] = orjson.loads(memoryview(value))
        else:  # only Bundle.entry[].resource is read from a prefetched Bundle
            out[key] = {"resourceType": "Bundle", "entry": [{"resource": e.resource} for e in bundle.entry or ()]}
    return out
