"""The everyday sentences: an evaluation set written for this project, never trained on.

``data/everyday.csv`` holds short texts of the kinds users send: product reviews, service
messages, plain statements of fact, mild and mixed opinions, negation and short forms. Each row
names the one-line rule (``RULES``) that gives its label, so what counts as neutral is written
down, not left to taste. The model build reports every version's figures on it in the model card.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PATH = Path(__file__).parent / "data" / "everyday.csv"
NAME = "everyday sentences"

RULES: dict[str, tuple[str, str]] = {
    "praise": ("positive", "the writer clearly approves: praise, thanks, delight, a recommendation"),
    "emphatic-negated-negative": ("positive", 'a negative negated and stressed into praise: "not bad at all", "couldn\'t be happier"'),
    "complaint": ("negative", "the writer clearly disapproves: a fault, a disappointment, a refund demanded"),
    "negated-positive": ("negative", 'a positive negated, with nothing positive beside it: "not good", "I wouldn\'t recommend it"'),
    "fact": ("neutral", "a plain statement, logistics or a question, judging nothing"),
    "lukewarm": ("neutral", "an explicitly middling judgement: okay, fine, average, meh, it does the job"),
    "mixed": ("neutral", "praise and complaint of about equal weight in one text"),
    "negated-negative": ("neutral", 'a negative negated without praise: "I don\'t hate it", "not terrible"'),
}
"""rule -> (label, what the rule covers)."""


@dataclass(frozen=True)
class Sentence:
    text: str
    label: str
    rule: str


def load(path: Path = PATH) -> list[Sentence]:
    """The set, checked: every rule known, every label the one its rule gives, no text twice."""
    sentences = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            text, label, rule = row["text"], row["label"], row["rule"]
            if rule not in RULES:
                raise ValueError(f"{path}:{line}: unknown rule {rule!r} (one of {', '.join(RULES)})")
            if RULES[rule][0] != label:
                raise ValueError(f"{path}:{line}: rule {rule!r} gives {RULES[rule][0]!r}, the row says {label!r}")
            if not text.strip() or text in seen:
                raise ValueError(f"{path}:{line}: a blank or repeated text: {text!r}")
            seen.add(text)
            sentences.append(Sentence(text, label, rule))
    return sentences


def per_rule_accuracy(sentences: Sequence[Sentence], predicted: Sequence[str]) -> dict[str, dict[str, float | int]]:
    """For each rule: how many texts it labels, and the share predicted right."""
    figures: dict[str, dict[str, float | int]] = {}
    for rule in RULES:
        hits = [p == s.label for s, p in zip(sentences, predicted, strict=True) if s.rule == rule]
        if hits:
            figures[rule] = {"examples": len(hits), "accuracy": round(sum(hits) / len(hits), 4)}
    return figures
