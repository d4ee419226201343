"""modelbuild/everyday.py: the checked-in everyday sentences and their labelling rules."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from modelbuild import everyday
from modelbuild.build import SEED_EXAMPLES, build_key, locate_sources
from modelbuild.everyday import RULES, Sentence, load, per_rule_accuracy

HEADER = "text,label,rule\n"


def test_the_set_has_at_least_150_sentences_of_every_kind() -> None:
    sentences = load()
    assert len(sentences) >= 150
    labels = Counter(s.label for s in sentences)
    assert set(labels) == {"negative", "neutral", "positive"} and min(labels.values()) >= 40, labels
    rules = Counter(s.rule for s in sentences)
    assert set(rules) == set(RULES), rules  # facts, lukewarm and mixed opinions, negation both ways
    assert sum(len(s.text.split()) <= 2 for s in sentences) >= 15  # short forms: "Meh.", "Fine."
    texts = {s.text for s in sentences}
    assert set(SEED_EXAMPLES) <= texts  # the seed's batch example, as the README sends it
    assert {"The meeting is at 3pm.", "It was fine, nothing special.", "Meh.", "I don't hate it", "Not bad at all"} <= texts


def test_each_rule_says_in_one_line_what_it_covers() -> None:
    for rule, (label, meaning) in RULES.items():
        assert label in ("negative", "neutral", "positive"), rule
        assert meaning and "\n" not in meaning, rule


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("Fine.,neutral,shrug\n", "unknown rule 'shrug'"),
        ("Fine.,positive,lukewarm\n", "rule 'lukewarm' gives 'neutral', the row says 'positive'"),
        ("Fine.,neutral,lukewarm\nFine.,neutral,lukewarm\n", "a blank or repeated text: 'Fine.'"),
        (" ,neutral,fact\n", "a blank or repeated text"),
    ],
)
def test_a_bad_row_is_refused_with_its_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "everyday.csv"
    path.write_text(HEADER + row)
    with pytest.raises(ValueError, match=r"everyday\.csv:\d+: ") as raised:
        load(path)
    assert message in str(raised.value)


def test_per_rule_accuracy_counts_each_rule_it_has() -> None:
    sentences = [Sentence("a", "neutral", "fact"), Sentence("b", "neutral", "fact"), Sentence("c", "positive", "praise")]
    assert per_rule_accuracy(sentences, ["neutral", "positive", "positive"]) == {
        "praise": {"examples": 1, "accuracy": 1.0},
        "fact": {"examples": 2, "accuracy": 0.5},
    }


def test_a_changed_set_changes_the_build_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = build_key(locate_sources())
    changed = tmp_path / "everyday.csv"
    changed.write_text(everyday.PATH.read_text() + "Lovely.,positive,praise\n")
    monkeypatch.setattr(everyday, "PATH", changed)
    assert build_key(locate_sources()) != before
