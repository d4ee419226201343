"""The ``sentence_embedding`` model: the MiniLM encoder alone, mean-pooled and L2-normalised.

The graph is the sentiment models' encoder without their head: ``input_ids`` and ``attention_mask``
(int64, [batch, sequence]) in, ``embeddings`` (float32, [batch, 384], unit rows) out. It has no labels,
so its card reports what the embedding itself does on the build's held-out movies: classifying each
held-out text by its nearest class centroid (centroids from the train split), and how alike texts of
one class are compared with texts of different classes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelbuild.evaluation import classification_report, provenance_lines

MODEL_NAME = "sentence_embedding"
VERSION = "v1"
FOLDER = "embedding_v1"
KIND = "text_embedding"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embeddings"


def nearest_centroid(
    train: np.ndarray, train_labels: Sequence[str], test: np.ndarray, test_labels: Sequence[str], labels: Sequence[str]
) -> dict[str, object]:
    """Label each test row by the most cosine-similar class centroid (the normalised mean train row of each label)."""
    train_truth = np.asarray(train_labels)
    centroids = np.stack([train[train_truth == label].astype(np.float64).mean(axis=0) for label in labels])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    predicted = [labels[i] for i in (test.astype(np.float64) @ centroids.T).argmax(axis=1)]
    report = classification_report(test_labels, predicted, labels)
    counts = {label: list(test_labels).count(label) for label in labels}
    report["majority_class_accuracy"] = round(max(counts.values()) / len(test_labels), 4)
    return report


def class_cosines(embeddings: np.ndarray, truth: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Mean cosine similarity over all pairs of distinct rows of one class, and over all pairs of different classes.

    Exact, without the pair matrix: the rows' dot products summed over pairs are the squared norm of their sum
    less each row's own squared norm."""
    rows = embeddings.astype(np.float64)
    truth_array = np.asarray(truth)
    sums = {label: rows[truth_array == label].sum(axis=0) for label in labels}
    counts = {label: int((truth_array == label).sum()) for label in labels}
    squares = {label: float((rows[truth_array == label] ** 2).sum()) for label in labels}
    within_sum = sum(float(sums[label] @ sums[label]) - squares[label] for label in labels)
    within_pairs = sum(counts[label] * (counts[label] - 1) for label in labels)
    total = sum(sums.values())
    all_sum = float(total @ total) - sum(squares.values())
    all_pairs = len(rows) * (len(rows) - 1)
    within = within_sum / within_pairs
    across = (all_sum - within_sum) / (all_pairs - within_pairs)
    return {"within_class": round(within, 4), "across_classes": round(across, 4), "gap": round(within - across, 4)}


def write_card(folder: Path, card: dict[str, object]) -> None:
    (folder / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    ev = card["evaluation"]
    assert isinstance(ev, dict)
    centroid = ev["nearest_centroid"]
    cosines = ev["cosine_similarity"]
    assert isinstance(centroid, dict) and isinstance(cosines, dict)
    dims = card["dimensions"]
    lines = [
        f"# {MODEL_NAME} {card['version']} (text embedding, {card['precision']})",
        "",
        f"{card['description']}.",
        "",
        f"- **Encoder:** {card['encoder']}",
        f"- **Pooling:** {card['pooling']}",
        f"- **Dimensions:** {dims}",
        f"- **Max tokens:** {card['max_tokens']} (longer texts are truncated)",
        f"- **Evaluation data:** {ev['data_source']}",
        f"- **Split:** {ev['split']}",
        f"- **Nearest-centroid accuracy of this file:** {centroid['accuracy']:.4f} on {centroid['examples']} held-out texts "
        f"({ev['method']}; majority-class baseline {centroid['majority_class_accuracy']:.4f})",
        f"- **Per-class recall:** {json.dumps(centroid['per_class_recall'])}",
        f"- **Mean cosine similarity, held-out texts:** {cosines['within_class']:.4f} within a class, "
        f"{cosines['across_classes']:.4f} across classes (gap {cosines['gap']:.4f})",
        *provenance_lines(card),
        "",
        f"Inputs: `{INPUT_NAMES[0]}`, `{INPUT_NAMES[1]}` (int64, shape [batch, sequence]), from the `tokenizer.json` "
        f"beside the model. Output: `{OUTPUT_NAME}` (float32, [batch, {dims}]), one unit-length row per text: "
        "the cosine similarity of two texts is the dot product of their rows.",
        "",
    ]
    (folder / "MODEL_CARD.md").write_text("\n".join(lines))
