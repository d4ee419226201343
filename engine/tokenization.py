"""Batch tokenisation with Hugging Face ``tokenizers``, padded to the longest text of each batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedBatch:
    """Model inputs for one batch; ``lengths`` counts the real (unpadded) tokens of each text."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    lengths: np.ndarray

    def feeds(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


# Texts are grouped so that padding adds at most this share of compute over the real tokens.
MAX_PADDING_OVERHEAD = 0.25


class TextTokenizer:
    """Wraps a ``tokenizer.json``: truncates to the model's maximum and pads per batch.

    Many exported tokenizers pad every input to a fixed length (128 for MiniLM), which
    makes short texts several times slower. Padding is always to the longest text of the
    batch; the attention mask keeps the results independent of the padding.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        padding = tokenizer.padding or {}
        self.pad_id = int(padding.get("pad_id", 0))
        self._pad_token = str(padding.get("pad_token", "[PAD]"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_file(cls, path: Path, max_length: int | None = None) -> TextTokenizer:
        tokenizer = Tokenizer.from_file(str(path))
        if max_length is None:
            truncation = tokenizer.truncation or {}
            max_length = int(truncation.get("max_length", 512))
        return cls(tokenizer, max_length)

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def _pad(self, ids: Sequence[Sequence[int]]) -> EncodedBatch:
        lengths = np.array([len(row) for row in ids], dtype=np.int64)
        input_ids = np.full((len(ids), int(lengths.max())), self.pad_id, dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
        attention_mask = (np.arange(input_ids.shape[1]) < lengths[:, None]).astype(np.int64)
        return EncodedBatch(input_ids=input_ids, attention_mask=attention_mask, lengths=lengths)

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        """All texts as one batch, padded to the longest."""
        return self._pad(self._ids(texts))

    def encode_grouped(self, texts: Sequence[str], max_tokens: int | None = None) -> list[tuple[list[int], EncodedBatch]]:
        """Split texts into batches of similar length: ``[(input indexes, batch), ...]``.

        One long text would otherwise pad a whole batch to its length. Texts are sorted by
        token count and a new group starts when padding would add more than
        ``MAX_PADDING_OVERHEAD`` of compute over the group's real tokens, or when the group's
        padded size (texts x longest) would pass ``max_tokens``.
        """
        ids = self._ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        groups: list[list[int]] = []
        real = 0
        for index in order:
            length = len(ids[index])
            padded = (len(groups[-1]) + 1) * length if groups else 0
            within_budget = max_tokens is None or padded <= max_tokens
            if groups and within_budget and padded <= (1 + MAX_PADDING_OVERHEAD) * (real + length):
                groups[-1].append(index)
                real += length
            else:
                groups.append([index])
                real = length
        return [(group, self._pad([ids[i] for i in group])) for group in groups]

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids after truncation, unpadded."""
        return self._ids(texts)

    def special_ids(self) -> set[int]:
        """The ids of the special tokens ([CLS], [SEP], padding and the like)."""
        special = {t.content for t in self._tokenizer.get_added_tokens_decoder().values() if t.special} | {self._pad_token}
        return {i for token, i in self._tokenizer.get_vocab(with_added_tokens=True).items() if token in special}

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text after truncation."""
        return [len(row) for row in self._ids(texts)]

    def save(self, path: Path) -> None:
        """Write the tokenizer with batch-longest padding, as this class uses it."""
        self._tokenizer.enable_padding(pad_id=self.pad_id, pad_token=self._pad_token)
        try:
            self._tokenizer.save(str(path))
        finally:
            self._tokenizer.no_padding()
