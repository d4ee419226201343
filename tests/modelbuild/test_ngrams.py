"""modelbuild/ngrams.py: word-piece n-gram TF-IDF, in numpy for training and in the graph for serving."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from engine.tokenization import TextTokenizer
from modelbuild.encoder import GraphBuilder, make_model
from modelbuild.ngrams import NgramVocabulary, grams, tfidf_node
from tests.conftest import V1_DIR, require_models

TRAIN = [
    "the service was great and the food was great",
    "the food was cold and the service was slow",
    "the service was fine",
    "great food, great service",
    "slow service, cold food",
    "the food was fine",
]
HELD_OUT = ["the food was great", "service was slow and cold", "an unseen sentence entirely", "", "great great great"]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    require_models(V1_DIR / "model.onnx")
    return TextTokenizer.from_file(V1_DIR / "tokenizer.json")


@pytest.fixture(scope="module")
def vocabulary(tokenizer: TextTokenizer) -> NgramVocabulary:
    return NgramVocabulary.fit(tokenizer.token_ids(TRAIN), tokenizer.special_ids(), min_df=2)


@pytest.fixture(scope="module")
def session(vocabulary: NgramVocabulary) -> ort.InferenceSession:
    g = GraphBuilder()
    rows = tfidf_node(g, vocabulary, "input_ids")
    model = make_model(g, [(rows, "tfidf", ["batch", len(vocabulary)])], "ngrams")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_grams_are_unigrams_then_bigrams_without_special_tokens() -> None:
    assert grams([101, 7, 8, 9, 102, 0, 0], {0, 101, 102}) == [(7,), (8,), (9,), (7, 8), (8, 9)]


def test_only_ngrams_in_min_df_train_texts_are_kept(tokenizer: TextTokenizer, vocabulary: NgramVocabulary) -> None:
    index = vocabulary.index()
    (great,) = tokenizer.token_ids(["great"])[0][1:-1]
    (unseen,) = tokenizer.token_ids(["entirely"])[0][1:-1]
    assert (great,) in index and (unseen,) not in index
    assert not vocabulary.special & {i for g in index for i in g}
    # idf is smoothed: an n-gram in every text weighs 1, a rarer one more.
    assert vocabulary.idf.min() >= 1.0 and vocabulary.idf[index[(great,)]] > 1.0


def test_the_graph_computes_the_training_features(
    tokenizer: TextTokenizer, vocabulary: NgramVocabulary, session: ort.InferenceSession
) -> None:
    texts = TRAIN + HELD_OUT
    served = session.run(None, tokenizer.encode(texts).feeds())[0]
    trained = vocabulary.transform(tokenizer.token_ids(texts)).toarray()
    np.testing.assert_allclose(served, trained, atol=1e-6)
    norms = np.linalg.norm(trained, axis=1)
    np.testing.assert_allclose(norms[norms > 0], 1.0, atol=1e-6)
    assert norms[TRAIN.__len__() + 2] == 0.0  # no known n-gram: a zero row, not NaN


def test_a_rows_features_do_not_depend_on_its_batch(tokenizer: TextTokenizer, session: ort.InferenceSession) -> None:
    texts = HELD_OUT + ["a much longer text that pads every other row of the batch with many padding tokens " * 3]
    together = session.run(None, tokenizer.encode(texts).feeds())[0]
    alone = np.concatenate([session.run(None, tokenizer.encode([t]).feeds())[0] for t in texts])
    assert np.array_equal(together, alone)


def test_max_features_keeps_the_ngrams_in_the_most_train_texts(tokenizer: TextTokenizer, vocabulary: NgramVocabulary) -> None:
    ids = tokenizer.token_ids(TRAIN)
    small = NgramVocabulary.fit(ids, tokenizer.special_ids(), min_df=2, max_features=3)
    assert len(small) == 3
    in_texts = {g: sum(g in set(grams(row, small.special)) for row in ids) for g in vocabulary.index()}
    kept = set(small.index())
    assert min(in_texts[g] for g in kept) >= max(in_texts[g] for g in set(in_texts) - kept)
