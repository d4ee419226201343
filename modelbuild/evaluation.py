"""Held-out evaluation figures that every model card reports, and the card's provenance lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def classification_report(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, object]:
    """Accuracy, per-class recall and precision, and the confusion matrix (truth -> predicted -> count)."""
    confusion = {t: {p: 0 for p in labels} for t in labels}
    for t, p in zip(truth, predicted, strict=True):
        confusion[t][p] += 1
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    return {
        "accuracy": round(correct / len(truth), 4),
        "examples": len(truth),
        "per_class_recall": {t: round(confusion[t][t] / max(1, sum(confusion[t].values())), 4) for t in labels},
        "per_class_precision": {p: round(confusion[p][p] / max(1, sum(confusion[t][p] for t in labels)), 4) for p in labels},
        "confusion": confusion,
    }


def provenance_lines(card: Mapping[str, object]) -> list[str]:
    """The card lines that say which files these are and how they were built."""
    return [
        f"- **Precision:** {card['precision']}",
        f"- **model.onnx sha256:** `{card['sha256']}`",
        f"- **model.onnx.data (weights) sha256:** `{card['weights_sha256']}`",
        f"- **Build command:** `{card['build_command']}`",
        f"- **Libraries:** {card['libraries']}",
    ]
