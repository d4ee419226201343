"""Word-piece n-gram TF-IDF: the second feature set of sentiment v3, computed inside the ONNX graph.

The features are the unigrams and bigrams of the tokenizer's ids (the encoder's own input, so the
served graph needs nothing new), each counted in a text, weighted by its smoothed inverse document
frequency over the train texts, and the row scaled to unit length, as scikit-learn's
``TfidfVectorizer(norm="l2", smooth_idf=True)`` does with plain term counts.
The graph counts them with ONNX's ``TfIdfVectorizer`` operator on ``input_ids``. The special tokens
([CLS], [SEP], padding) are in no n-gram of the vocabulary, so padding never changes a row and a
text's features do not depend on its batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from modelbuild.encoder import GraphBuilder

Gram = tuple[int, ...]
MIN_DF = 3
"""An n-gram is a candidate when at least this many train texts hold it (about 88k of them)..."""
MAX_FEATURES = 30_000
"""...and among those, the ones most train texts hold. The head's MatMul reads a padded copy of its
[n-grams, 3] weight on every call: 88k n-grams cost about 0.7 ms a call, a quarter of a short
text's time, for 0.1 point of held-out accuracy (the mean over the sources' held-out splits,
0.7294 with all of them against 0.7282 with 30k, measured while developing v3)."""


def grams(ids: Sequence[int], special: Collection[int]) -> list[Gram]:
    """A text's unigrams and bigrams, over its ids without the special tokens."""
    words = [i for i in ids if i not in special]
    return [(i,) for i in words] + list(zip(words, words[1:], strict=False))


@dataclass(frozen=True)
class NgramVocabulary:
    """The n-grams kept (unigrams first, then bigrams, each sorted) and their idf weights."""

    unigrams: list[int]
    bigrams: list[tuple[int, int]]
    idf: np.ndarray
    special: frozenset[int]

    @classmethod
    def fit(cls, ids: Sequence[Sequence[int]], special: Collection[int], min_df: int, max_features: int | None = None) -> NgramVocabulary:
        """Keep the n-grams found in at least ``min_df`` of the train texts, at most ``max_features`` of
        them: those found in the most texts (ties: the smaller n-gram)."""
        df: Counter[Gram] = Counter()
        for row in ids:
            df.update(set(grams(row, special)))
        kept = sorted((g for g, count in df.items() if count >= min_df), key=lambda g: (-df[g], len(g), g))[:max_features]
        unigrams = sorted(g[0] for g in kept if len(g) == 1)
        bigrams = sorted((g[0], g[1]) for g in kept if len(g) == 2)
        counts = np.array([df[(u,)] for u in unigrams] + [df[b] for b in bigrams], dtype=np.float64)
        idf = np.log((1 + len(ids)) / (1 + counts)) + 1
        return cls(unigrams=unigrams, bigrams=bigrams, idf=idf.astype(np.float32), special=frozenset(special))

    def __len__(self) -> int:
        return len(self.unigrams) + len(self.bigrams)

    def index(self) -> dict[Gram, int]:
        return {**{(u,): k for k, u in enumerate(self.unigrams)}, **{b: len(self.unigrams) + k for k, b in enumerate(self.bigrams)}}

    def transform(self, ids: Sequence[Sequence[int]]) -> sparse.csr_matrix:
        """Unit-length TF-IDF rows (a text without a known n-gram is a zero row)."""
        index = self.index()
        data: list[float] = []
        columns: list[int] = []
        pointers = [0]
        for row in ids:
            counts = Counter(index[g] for g in grams(row, self.special) if g in index)
            columns.extend(counts)
            data.extend(counts.values())
            pointers.append(len(columns))
        tf = sparse.csr_matrix((np.array(data, dtype=np.float64), columns, pointers), shape=(len(ids), len(self)))
        weighted = tf.multiply(self.idf.astype(np.float64)[None, :]).tocsr()
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        return sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ weighted

    def operator_attributes(self) -> dict[str, object]:
        """The ``TfIdfVectorizer`` attributes that count this vocabulary's n-grams, in its column order."""
        pool = list(self.unigrams) + [i for pair in self.bigrams for i in pair]
        return {
            "mode": "TF",
            "min_gram_length": 1,
            "max_gram_length": 2,
            "max_skip_count": 0,
            "ngram_counts": [0, len(self.unigrams)],
            "ngram_indexes": list(range(len(self))),
            "pool_int64s": pool,
        }


def tfidf_node(g: GraphBuilder, vocabulary: NgramVocabulary, input_ids: str) -> str:
    """Add the nodes that compute ``vocabulary.transform`` from ``input_ids``; return the rows' name."""
    counts = g.op("TfIdfVectorizer", [input_ids], "ngrams.counts", **vocabulary.operator_attributes())
    weighted = g.op("Mul", [counts, g.const("ngrams.idf", vocabulary.idf)], "ngrams.weighted")
    norm = g.op("ReduceL2", [weighted], "ngrams.l2norm", axes=[1], keepdims=1)
    norm = g.op("Max", [norm, g.const("ngrams.min_norm", np.array(1e-12, dtype=np.float32))], "ngrams.l2norm_clamped")
    return g.op("Div", [weighted, norm], "ngrams.tfidf")
