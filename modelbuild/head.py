"""The classification head: multinomial logistic regression on sentence embeddings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
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
