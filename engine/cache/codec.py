"""The cached value: a model's labels and scores for one text, as compact versioned JSON.

``{"v":1,"s":{"negative":0.02,"positive":0.98}}``. A reader that meets another version, or bytes
that are not this shape at all, treats the entry as a miss, so a format change never misreads old
entries and a corrupted store never fails a request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

FORMAT_VERSION = 1


def encode_result(labels_scores: Mapping[str, float]) -> bytes:
    payload = {"v": FORMAT_VERSION, "s": {str(label): float(score) for label, score in labels_scores.items()}}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_result(data: bytes) -> dict[str, float] | None:
    """The labels and scores in ``data``, or ``None`` when it is not a version-1 entry."""
    try:
        payload = json.loads(data)
    except (ValueError, TypeError, RecursionError):  # bad UTF-8 or JSON, a non-bytes value, absurd nesting
        return None
    if not isinstance(payload, dict) or payload.get("v") != FORMAT_VERSION:
        return None
    scores = payload.get("s")
    if not isinstance(scores, dict):
        return None
    result: dict[str, float] = {}
    for label, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, int | float):
            return None
        result[label] = float(score)
    return result
