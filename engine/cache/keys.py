"""Cache keys: which model produced a result, from which files, for exactly which text.

A key is ``model:version:model_digest:sha256(text)``. The digest of the model and tokenizer files
means a replaced file invalidates its entries with no flush; the version is the one rollout chose,
so a cached result never bypasses rollout. The text is hashed exactly as given (no normalising) and
nothing per-request, such as a request id, takes part. Each part is percent-encoded, so a ``:`` in
a name cannot make one model's prefix match another's keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

DIGEST_CHARS = 16
_CHUNK = 1 << 20


def _part(value: str) -> str:
    return quote(value, safe="")


def cache_key(model: str, version: str, model_digest: str, text: str) -> str:
    # surrogatepass: a JSON body may carry a lone surrogate ("\ud800"); it must hash, not raise.
    text_hash = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key_prefix(model, version)}{_part(model_digest)}:{text_hash}"


def key_prefix(model: str, version: str | None = None) -> str:
    """The prefix shared by every key of ``model`` (of one ``version`` when given), for invalidation."""
    if version is None:
        return f"{_part(model)}:"
    return f"{_part(model)}:{_part(version)}:"


def content_digest(paths: Iterable[Path]) -> str:
    """A short hash of the files' contents, in the order given (e.g. the model, then the tokenizer)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.stat().st_size.to_bytes(8, "big"))  # length-prefixed: file boundaries count
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:DIGEST_CHARS]
