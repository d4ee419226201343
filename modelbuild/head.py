"""The classification heads: multinomial logistic regression on sentence embeddings (v1), and on
embeddings beside word-piece n-grams (v3)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

logger = logging.getLogger(__name__)

C_GRID = (0.5, 2.0, 8.0, 32.0)
CV_FOLDS = 4
MAX_ITER = 3000


@dataclass(frozen=True)
class Head:
    """A linear head: ``probabilities = softmax(embedding @ coef.T + intercept)``."""

    labels: tuple[str, ...]
    coef: np.ndarray
    intercept: np.ndarray
    regularisation_c: float
    cv_accuracy: float


def _fit(features: np.ndarray, labels: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=MAX_ITER).fit(features, labels)


def train_head(features: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> Head:
    """Pick C by grouped cross-validation on the training set only, then fit on all of it.

    Folds are grouped by movie so that validation, like the held-out test, never sees a
    movie the head was fitted on.
    """
    folds = list(GroupKFold(n_splits=CV_FOLDS).split(features, labels, groups))
    scores = {}
    for c in C_GRID:
        accs = [float((_fit(features[tr], labels[tr], c).predict(features[va]) == labels[va]).mean()) for tr, va in folds]
        scores[c] = float(np.mean(accs))
        logger.info("head C=%s grouped-CV accuracy %.4f", c, scores[c])
    best = max(C_GRID, key=lambda c: scores[c])
    model = _fit(features, labels, best)
    return Head(
        labels=tuple(str(x) for x in model.classes_),
        coef=model.coef_.astype(np.float32),
        intercept=model.intercept_.astype(np.float32),
        regularisation_c=best,
        cv_accuracy=scores[best],
    )


EMBEDDING_SCALE = 0.07
"""How much the standardised embedding weighs against the unit-length n-gram row: chosen, with
``HYBRID_C`` and ``ngrams`` ``MIN_DF``, by the mean accuracy over the sources' held-out splits
among the settings tried while developing v3 (never by the everyday sentences)."""
HYBRID_C = 1.0


@dataclass(frozen=True)
class HybridHead:
    """``logits = embedding @ embedding_coef.T + ngrams @ ngram_coef.T + intercept``.

    The embedding's standardisation (train mean and spread, times ``EMBEDDING_SCALE``) is folded
    into ``embedding_coef`` and ``intercept``, so the graph multiplies the raw unit-length embedding."""

    labels: tuple[str, ...]
    embedding_coef: np.ndarray
    ngram_coef: np.ndarray
    intercept: np.ndarray
    regularisation_c: float
    class_counts: dict[str, int]


def train_hybrid_head(embeddings: np.ndarray, ngrams: sparse.csr_matrix, labels: np.ndarray) -> HybridHead:
    """One class-balanced multinomial logistic regression on [standardised embedding, n-gram TF-IDF]."""
    mean = embeddings.astype(np.float64).mean(axis=0)
    spread = embeddings.astype(np.float64).std(axis=0)
    spread = np.where(spread < 1e-6, 1.0, spread)  # two MiniLM dimensions are constant
    standardised = (embeddings - mean) / spread * EMBEDDING_SCALE
    features = sparse.hstack([sparse.csr_matrix(standardised), ngrams]).tocsr()
    model = LogisticRegression(C=HYBRID_C, max_iter=MAX_ITER, class_weight="balanced").fit(features, labels)
    width = embeddings.shape[1]
    embedding_coef = model.coef_[:, :width] * EMBEDDING_SCALE / spread
    return HybridHead(
        labels=tuple(str(x) for x in model.classes_),
        embedding_coef=embedding_coef.astype(np.float32),
        ngram_coef=model.coef_[:, width:].astype(np.float32),
        intercept=(model.intercept_ - embedding_coef @ mean).astype(np.float32),
        regularisation_c=HYBRID_C,
        class_counts={str(c): int((labels == c).sum()) for c in model.classes_},
    )
