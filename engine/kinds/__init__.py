"""Model kinds: one class per kind, one module each, registered in ``KINDS``.

Adding a kind is a new module here and one entry in ``KINDS``; the registry, the lifecycle
and the facade take everything kind-specific from the class (see ``engine.kinds.base``).
"""

from __future__ import annotations

from engine.kinds.base import Limits, ModelFiles, ModelKind
from engine.kinds.tabular import TabularClassifier
from engine.kinds.text_classification import TextClassifier
from engine.kinds.text_embedding import TextEmbedder

KINDS: dict[str, type[ModelKind]] = {kind.name: kind for kind in (TextClassifier, TabularClassifier, TextEmbedder)}
DEFAULT_KIND = TextClassifier.name


def kind_named(name: str) -> type[ModelKind]:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; known kinds: {sorted(KINDS)}") from None


def request_fields() -> dict[str, type[ModelKind]]:
    """Each request field and the first kind that takes it (kinds may share one, as the text kinds share ``texts``)."""
    fields: dict[str, type[ModelKind]] = {}
    for kind in KINDS.values():
        fields.setdefault(kind.request_field, kind)
    return fields


__all__ = ["DEFAULT_KIND", "KINDS", "Limits", "ModelFiles", "ModelKind", "kind_named", "request_fields"]
