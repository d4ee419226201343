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
from modelbuild import dataset, everyday
from modelbuild.build import SEED_EXAMPLES
from modelbuild.evaluation import classification_report
from tests.conftest import V1_DIR, V2_DIR, require_models

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
    "neutral": [
        "The film follows a young detective who investigates a series of disappearances in a small coastal town.",
        "After her husband dies, a widow moves to Paris with her two children and opens a bakery.",
    ],
}


@pytest.fixture(scope="module", params=["v1", "v2"])
def classifier(request: pytest.FixtureRequest) -> TextClassifier:
    require_models()
    folder = {"v1": V1_DIR, "v2": V2_DIR}[request.param]
    return TextClassifier(ModelFiles(folder / "model.onnx"), SessionConfig())


def _card(classifier_dir: Path) -> dict[str, object]:
    card: dict[str, object] = json.loads((classifier_dir / "model_card.json").read_text())
    return card


@pytest.mark.parametrize("label", sorted(CLEAR_CASES))
def test_clear_cut_sentences_get_their_class(classifier: TextClassifier, label: str) -> None:
    probabilities = classifier.run(CLEAR_CASES[label])
    predicted = [classifier.labels[i] for i in probabilities.argmax(axis=1)]
    assert predicted == [label] * len(CLEAR_CASES[label])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_seed_example_is_confidently_positive(classifier: TextClassifier) -> None:
    scores = dict(zip(classifier.labels, classifier.run(["I love this product"])[0], strict=True))
    assert scores["positive"] > 0.8


@pytest.mark.parametrize("version_dir", [V1_DIR, V2_DIR], ids=["v1", "v2"])
def test_model_card_accuracy_reproduces_on_held_out_movies(version_dir: Path) -> None:
    require_models()
    card = _card(version_dir)
    evaluation = card["evaluation"]
    assert isinstance(evaluation, dict)
    classifier = TextClassifier(ModelFiles(version_dir / "model.onnx"), SessionConfig())
    split = dataset.split_by_movie(dataset.load_corpus(dataset.corpus_path()))
    texts = [e.text for e in split.test]
    # Batches of 32 grouped by character length, where the build grouped 64 by token count:
    # batch invariance means the same predictions.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows = np.zeros((len(texts), len(classifier.labels)), dtype=np.float32)
    for start in range(0, len(order), 32):
        chunk = order[start : start + 32]
        rows[chunk] = classifier.run([texts[i] for i in chunk])
    predicted = [classifier.labels[i] for i in rows.argmax(axis=1)]
    accuracy = float(np.mean([p == e.label for p, e in zip(predicted, split.test, strict=True)]))
    assert evaluation["examples"] == len(texts)
    assert accuracy == pytest.approx(evaluation["accuracy"], abs=0.0006)
    assert accuracy > 0.72


@pytest.mark.parametrize("version_dir", [V1_DIR, V2_DIR], ids=["v1", "v2"])
def test_model_card_everyday_figures_and_seed_answers_reproduce(version_dir: Path) -> None:
    require_models()
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
