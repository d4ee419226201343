"""modelbuild/head.py: the v3 head's folded coefficients give the fitted model's own probabilities."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from modelbuild.head import EMBEDDING_SCALE, HYBRID_C, MAX_ITER, train_hybrid_head


def test_the_folded_hybrid_head_gives_the_fitted_models_probabilities() -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["negative", "neutral", "positive"])[rng.integers(0, 3, 300)]
    shift = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}
    embeddings = (rng.normal(size=(300, 8)) * 0.1 + np.array([shift[y] for y in labels])[:, None] * 0.05).astype(np.float32)
    embeddings[:, 3] = 0.25  # a constant dimension, as MiniLM has two
    ngrams = sparse.random(300, 20, density=0.2, random_state=1, format="csr")
    head = train_hybrid_head(embeddings, ngrams, labels)

    # The same fit, unfolded: standardise, scale, stack, balanced logistic regression.
    spread = embeddings.astype(np.float64).std(axis=0)
    standardised = (embeddings - embeddings.astype(np.float64).mean(axis=0)) / np.where(spread < 1e-6, 1.0, spread) * EMBEDDING_SCALE
    model = LogisticRegression(C=HYBRID_C, max_iter=MAX_ITER, class_weight="balanced")
    expected = model.fit(sparse.hstack([sparse.csr_matrix(standardised), ngrams]).tocsr(), labels).predict_proba(
        sparse.hstack([sparse.csr_matrix(standardised), ngrams]).tocsr()
    )

    logits = embeddings @ head.embedding_coef.T + ngrams @ head.ngram_coef.T + head.intercept
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    assert head.labels == ("negative", "neutral", "positive")
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert float((np.array(head.labels)[probabilities.argmax(axis=1)] == labels).mean()) > 0.6
    assert head.class_counts == {label: int((labels == label).sum()) for label in head.labels}
