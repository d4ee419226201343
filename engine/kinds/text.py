"""What the text kinds share: a ``tokenizer.json`` beside an encoder graph, texts in, rows out.

Texts run in groups of similar token length, so one long text does not pad a whole batch;
every row is independent of the texts it was batched with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from engine.errors import InvalidInput, PayloadTooLarge
from engine.kinds.base import MAX_DETAILS, Limits, ModelFiles, check_count, require_files
from engine.session import SessionConfig, open_session, run_options
from engine.tokenization import TextTokenizer

REQUIRED_INPUTS = {"input_ids", "attention_mask"}
_CHARS_PER_TOKEN = 3
_WARMUP_TEXTS = ["warm up", "a somewhat longer sentence to warm up a second sequence length in the same batch"]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class TextModel:
    """Base of the text kinds: opens the tokenizer and the session, checks and runs texts."""

    request_field: ClassVar[str] = "texts"
    request_schema: ClassVar[Any] = list[str]
    request_description: ClassVar[str] = "Texts for a text model (limits: MAX_TEXTS_PER_REQUEST, MAX_TEXT_CHARS)."

    def __init__(self, files: ModelFiles, session_config: SessionConfig) -> None:
        tokenizer_path = files.tokenizer if files.tokenizer is not None else files.beside("tokenizer.json")
        require_files(files.model, tokenizer_path)
        self.tokenizer = TextTokenizer.from_file(tokenizer_path)
        self._session = open_session(files.model, session_config)
        self._run_options = run_options(session_config)
        self._max_batch_tokens = session_config.max_batch_tokens
        inputs = {i.name for i in self._session.get_inputs()}
        if not REQUIRED_INPUTS <= inputs:
            raise ValueError(f"{files.model}: expected inputs {sorted(REQUIRED_INPUTS)}, graph has {sorted(inputs)}")
        self._takes_token_types = "token_type_ids" in inputs

        output = self._session.get_outputs()[0]
        if len(output.shape) != 2:
            raise ValueError(f"{files.model}: output {output.name!r} has shape {output.shape}; a text model gives [batch, n]")
        self._output_name: str = output.name
        self._output_width: object = output.shape[1]  # an int, or a symbolic name
        self.width: int = output.shape[1] if isinstance(output.shape[1], int) else 0

    @classmethod
    def _text_sidecars(cls, has_tokenizer: bool) -> tuple[str, ...]:
        return () if has_tokenizer else ("tokenizer.json",)

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def check(self, inputs: Sequence[Any], limits: Limits) -> None:
        check_count(inputs, limits)
        bad = [i for i, text in enumerate(inputs) if not isinstance(text, str)]
        if bad:
            raise InvalidInput("this model takes texts: every input must be a string", details={"indexes": bad[:MAX_DETAILS]})
        unencodable = [i for i, text in enumerate(inputs) if not _encodable(text)]
        if unencodable:
            # e.g. a lone surrogate ("\ud800" in JSON): the tokenizer would fail the whole shared batch.
            raise InvalidInput(
                "every text must be valid Unicode: a lone surrogate (e.g. \\ud800) cannot be encoded",
                details={"indexes": unencodable[:MAX_DETAILS]},
            )
        too_long = [i for i, text in enumerate(inputs) if len(text) > limits.max_text_chars]
        if too_long:
            raise PayloadTooLarge(
                f"{len(too_long)} text(s) longer than {limits.max_text_chars} characters (MAX_TEXT_CHARS)",
                details={"indexes": too_long[:MAX_DETAILS]},
            )

    def input_cost(self, item: Any) -> int:
        """The text's tokens, estimated from its length without tokenising it (about 3 characters
        a token or more in most text; at most the tokenizer's maximum, where it truncates)."""
        return min(self.tokenizer.max_length, len(item) // _CHARS_PER_TOKEN + 2) if isinstance(item, str) else 1

    def run(self, inputs: list[Any]) -> np.ndarray:
        """One row per text, in input order; texts run in groups of similar length, each group
        within the token budget (texts x longest <= ``max_batch_tokens``)."""
        return self.run_phased(inputs)[0]

    def run_phased(self, inputs: list[Any]) -> tuple[np.ndarray, float]:
        """``run``'s rows, and the ``time.monotonic()`` instant the texts were tokenised: the
        batcher times the two phases (tokenize, run) from it."""
        groups = self.tokenizer.encode_grouped(inputs, max_tokens=self._max_batch_tokens)
        tokenized = time.monotonic()
        result = np.empty((len(inputs), self.width), dtype=np.float32)
        for indexes, batch in groups:
            feeds = batch.feeds()
            if self._takes_token_types:
                feeds["token_type_ids"] = np.zeros_like(batch.input_ids)
            result[indexes] = self._session.run([self._output_name], feeds, self._run_options)[0]
        return result, tokenized

    def warm_up(self) -> None:
        for texts in (_WARMUP_TEXTS[:1], _WARMUP_TEXTS):
            self.run(list(texts))
