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


class TextTokenizer:
    """Wraps a ``tokenizer.json``: truncates to the model's maximum and pads per batch.

    Many exported tokenizers pad every input to a fixed length (128 for MiniLM), which
    makes short texts several times slower. Padding is always reset to the longest text of
    the batch; the attention mask keeps the results independent of the padding.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        padding = tokenizer.padding or {}
        tokenizer.no_padding()
        tokenizer.enable_padding(
            pad_id=int(padding.get("pad_id", 0)),
            pad_type_id=int(padding.get("pad_type_id", 0)),
            pad_token=str(padding.get("pad_token", "[PAD]")),
        )
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

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        encodings = self._tokenizer.encode_batch(list(texts))
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return EncodedBatch(
            input_ids=np.array([e.ids for e in encodings], dtype=np.int64),
            attention_mask=attention_mask,
            lengths=attention_mask.sum(axis=1),
        )

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text after truncation, without building padded arrays."""
        return [sum(e.attention_mask) for e in self._tokenizer.encode_batch(list(texts))]

    def save(self, path: Path) -> None:
        self._tokenizer.save(str(path))
