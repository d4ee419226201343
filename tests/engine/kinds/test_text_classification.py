"""The built sentiment versions as the engine loads them: clear cases, held-out accuracy, batch invariance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InvalidInput, PayloadTooLarge
from engine.kinds import KINDS, Limits, ModelFiles
from engine.kinds.text_classification import TextClassifier
from engine.results import Output
from engine.session import SessionConfig
from modelbuild import corpora, dataset, everyday
from modelbuild.build import SEED_EXAMPLES, two_class_report
from modelbuild.evaluation import classification_report
from tests.conftest import SENTIMENT_DIRS, require_models

VERSIONS = list(SENTIMENT_DIRS)

CLEAR_CASES = {
    "positive": [
        "I love this product",
        "A wonderful, moving film with brilliant performances.",
        "One of the best movies of the year, funny and heartfelt.",
    ],
    "negative": [
        "This is terrible",
        "A dull, lifeless mess that wastes its talented cast.",
        "Boring, predictable and far too long. I hated it.",
    ],
}
NEUTRAL_CASES = {
    # v1 and v2 learned "neutral" from Rotten Tomatoes' plot summaries.
    "v1": [
        "The film follows a young detective who investigates a series of disappearances in a small coastal town.",
        "After her husband dies, a widow moves to Paris with her two children and opens a bakery.",
    ],
    # v3 and v4 learned it from tweets, reviews and editorials rated neither positive nor negative.
    "v3": ["The train to Leeds leaves from platform 4 at 9:15.", "Our office will be closed on Monday for the holiday.", "It's okay"],
}


@pytest.fixture(scope="module", params=VERSIONS)
def classifier(request: pytest.FixtureRequest) -> TextClassifier:
    require_models()
    classifier = TextClassifier(ModelFiles(SENTIMENT_DIRS[request.param] / "model.onnx"), SessionConfig())
    classifier.version = request.param  # type: ignore[attr-defined]
    return classifier


def _run_sorted(classifier: TextClassifier, texts: list[str]) -> np.ndarray:
    """Batches of 32 grouped by character length, where the build grouped 64 by token count:
    batch invariance means the same predictions."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows = np.zeros((len(texts), len(classifier.labels)), dtype=np.float32)
    for start in range(0, len(order), 32):
        chunk = order[start : start + 32]
        rows[chunk] = classifier.run([texts[i] for i in chunk])
    return rows


def _card(classifier_dir: Path) -> dict[str, object]:
    card: dict[str, object] = json.loads((classifier_dir / "model_card.json").read_text())
    return card


@pytest.mark.parametrize("label", ["negative", "neutral", "positive"])
def test_clear_cut_sentences_get_their_class(classifier: TextClassifier, label: str) -> None:
    family = "v3" if classifier.version in ("v3", "v4") else "v1"  # type: ignore[attr-defined]
    texts = CLEAR_CASES[label] if label in CLEAR_CASES else NEUTRAL_CASES[family]
    probabilities = classifier.run(texts)
    predicted = [classifier.labels[i] for i in probabilities.argmax(axis=1)]
    assert predicted == [label] * len(texts)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_seed_example_is_confidently_positive(classifier: TextClassifier) -> None:
    scores = dict(zip(classifier.labels, classifier.run(["I love this product"])[0], strict=True))
    assert scores["positive"] > 0.8


@pytest.mark.parametrize("version", VERSIONS)
def test_model_card_accuracy_reproduces_on_held_out_movies(version: str) -> None:
    require_models()
    card = _card(SENTIMENT_DIRS[version])
    evaluation, held_out = card["evaluation"], card["held_out"]
    assert isinstance(evaluation, dict) and isinstance(held_out, dict)
    classifier = TextClassifier(ModelFiles(SENTIMENT_DIRS[version] / "model.onnx"), SessionConfig())
    split = dataset.split_by_movie(dataset.load_corpus(dataset.corpus_path()))
    rows = _run_sorted(classifier, [e.text for e in split.test])
    predicted = [classifier.labels[i] for i in rows.argmax(axis=1)]
    accuracy = float(np.mean([p == e.label for p, e in zip(predicted, split.test, strict=True)]))
    assert evaluation["examples"] == len(split.test)
    assert accuracy == pytest.approx(evaluation["accuracy"], abs=0.0006)
    assert accuracy > 0.70
    fresh_or_rotten = two_class_report([e.label for e in split.test], rows, classifier.labels)
    assert fresh_or_rotten["examples"] == held_out["rotten_tomatoes_2class"]["examples"]
    assert fresh_or_rotten["accuracy"] == pytest.approx(held_out["rotten_tomatoes_2class"]["accuracy"], abs=0.0006)


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_model_card_figures_reproduce_on_the_other_held_out_sets(version: str) -> None:
    """v3 and v4, whose goals these sets measure (v1 and v2's figures come from the same build code; running
    them too would add a minute to `make test`)."""
    require_models()
    held_out = _card(SENTIMENT_DIRS[version])["held_out"]
    assert isinstance(held_out, dict)
    classifier = TextClassifier(ModelFiles(SENTIMENT_DIRS[version] / "model.onnx"), SessionConfig())
    for corpus in corpora.load_all():
        rows = _run_sorted(classifier, [t.text for t in corpus.test])
        report = classification_report(
            [t.label for t in corpus.test], [classifier.labels[i] for i in rows.argmax(axis=1)], classifier.labels
        )
        recorded = held_out[corpus.name]
        assert report["examples"] == recorded["examples"], corpus.name
        assert report["accuracy"] == pytest.approx(recorded["accuracy"], abs=0.0015), corpus.name


@pytest.mark.parametrize("version", VERSIONS)
def test_model_card_everyday_figures_and_seed_answers_reproduce(version: str) -> None:
    require_models()
    version_dir = SENTIMENT_DIRS[version]
    card = _card(version_dir)
    classifier = TextClassifier(ModelFiles(version_dir / "model.onnx"), SessionConfig())
    sentences = everyday.load()
    predicted = [classifier.labels[i] for i in classifier.run([s.text for s in sentences]).argmax(axis=1)]
    expected = {
        **classification_report([s.label for s in sentences], predicted, classifier.labels),
        "per_rule": everyday.per_rule_accuracy(sentences, predicted),
    }
    recorded = card["everyday"]
    assert isinstance(recorded, dict)
    assert {k: v for k, v in recorded.items() if k != "source"} == expected
    seed = [classifier.labels[i] for i in classifier.run(list(SEED_EXAMPLES)).argmax(axis=1)]
    assert card["seed_examples"] == dict(zip(SEED_EXAMPLES, seed, strict=True))


def test_scores_are_batch_invariant(classifier: TextClassifier) -> None:
    texts = [
        "I love this product",
        "A",
        "This is terrible",
        "The plot meanders for two hours before arriving at an ending that nobody in the audience could have cared about.",
        "It's okay",
        "Wow!!! Best. Movie. EVER... 10/10 would watch again",
        "An unexpectedly tender story about a family of fishermen on the coast of Norway, beautifully shot " * 4,
    ]
    alone = np.stack([classifier.run([t])[0] for t in texts])
    together = classifier.run(texts)
    reversed_rows = classifier.run(texts[::-1])[::-1]
    assert np.abs(together - alone).max() <= 1e-4
    assert np.abs(reversed_rows - alone).max() <= 1e-4


def test_checks_name_the_offending_inputs(classifier: TextClassifier) -> None:
    limits = Limits(max_inputs=3, max_text_chars=5)
    classifier.check(["short", "ok"], limits)
    with pytest.raises(PayloadTooLarge, match="MAX_TEXTS_PER_REQUEST"):
        classifier.check(["a"] * 4, limits)
    with pytest.raises(PayloadTooLarge, match="MAX_TEXT_CHARS") as too_long:
        classifier.check(["ok", "longer"], limits)
    assert too_long.value.details == {"indexes": [1]}
    with pytest.raises(InvalidInput, match="every input must be a string") as not_text:
        classifier.check(["ok", 3], limits)
    assert not_text.value.details == {"indexes": [1]}


def test_a_result_is_the_seed_shape(classifier: TextClassifier) -> None:
    assert KINDS["text_classification"] is TextClassifier
    row = classifier.run(["I love this product"])[0]
    result = classifier.result("I love this product", Output(row=row, latency_ms=1.25, cached=True)).model_dump()
    assert list(result) == ["text", "prediction", "scores", "latency_ms", "cached"]
    assert result["prediction"] == "positive" and result["cached"] is True
    assert classifier.agrees(row, row) and not classifier.agrees(row, row[::-1].copy())


def test_a_text_that_cannot_be_encoded_is_refused_before_it_reaches_a_batch(classifier: TextClassifier) -> None:
    lone = "fine \ud800 text"
    with pytest.raises(TypeError):  # what the check prevents: the tokenizer fails, and with it a whole shared batch
        classifier.run(["a clean text", lone])
    with pytest.raises(InvalidInput, match="valid Unicode") as bad:
        classifier.check(["a clean text", lone, "another"], Limits(max_inputs=10, max_text_chars=100))
    assert bad.value.details == {"indexes": [1]}
