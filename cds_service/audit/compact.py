"""The audit record of one call, small and complete: what replay and review need, nothing twice.

- the cards and the facts each card used (a rule's facts capped at ``MAX_FACTS``, the rest counted);
- the data gaps aggregated: a count per kind plus the first ``GAP_SAMPLE``;
- the normalised record (``invocation.snapshot``) as zlib-compressed JSON addressed by its SHA-256: the same
  record is stored once (table ``record_snapshot``) and each invocation references it by hash.

A snapshot's gap list is compacted the same way (first ``GAP_SAMPLE``, then ``gapsOmitted``: kind -> count);
``audit.replay.record_from_snapshot`` restores the counts so that the data-gaps card replays unchanged.
"""
from __future__ import annotations

import hashlib
import threading
import zlib
from collections import Counter, OrderedDict
from typing import Any

import orjson

GAP_SAMPLE = 10  # gaps kept verbatim per call (the rest are counted by kind)
MAX_FACTS = 60  # facts kept per rule (a data-gaps card has one fact per gap)
COMPRESS_LEVEL = 6


def aggregate_gaps(gaps: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(the first GAP_SAMPLE gaps, count per kind of all of them)."""
    counts = Counter(str(g.get("kind", "")) for g in gaps)
    return list(gaps[:GAP_SAMPLE]), dict(counts)


def cap_facts(facts: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Each rule's facts, at most MAX_FACTS; a final ``{"kind": "omitted", "count": n}`` says how many were left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rule, items in facts.items():
        items = list(items)
        if len(items) > MAX_FACTS:
            items = items[:MAX_FACTS] + [{"kind": "omitted", "count": len(items) - MAX_FACTS}]
        out[rule] = items
    return out


def compact_snapshot(snap: dict[str, Any]) -> dict[str, Any]:
    """The snapshot with its gap list cut to GAP_SAMPLE and the rest counted by kind (``gapsOmitted``)."""
    gaps = snap.get("gaps") or []
    if len(gaps) <= GAP_SAMPLE:
        return snap
    out = dict(snap)
    out["gaps"] = gaps[:GAP_SAMPLE]
    out["gapsOmitted"] = dict(Counter(str(g.get("kind", "")) for g in gaps[GAP_SAMPLE:]))
    return out


def snapshot_json(snap: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys): equal records give equal bytes, hence equal hashes."""
    return orjson.dumps(snap, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


class SnapshotEncoder:
    """Canonical snapshot JSON -> (sha256, compressed). Runs in the writer (the spool holds the JSON); the
    last few compressions are remembered, so a chart opened again is not compressed again."""

    def __init__(self, size: int = 64):
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def encode(self, raw: bytes) -> tuple[str, bytes]:
        digest = hashlib.sha256(raw).hexdigest()
        with self._lock:
            blob = self._cache.get(digest)
            if blob is not None:
                self._cache.move_to_end(digest)
                return digest, blob
        blob = zlib.compress(raw, COMPRESS_LEVEL)
        with self._lock:
            self._cache[digest] = blob
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return digest, blob


def encode_json(value: Any) -> bytes:
    return zlib.compress(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS), COMPRESS_LEVEL)


def decode_json(blob: bytes) -> Any:
    return orjson.loads(zlib.decompress(blob))


decode_snapshot = decode_json  # the decompressed snapshot dict of a RecordSnapshotRow.content
