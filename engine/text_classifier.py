"""The ``text_classification`` model kind: tokenizer + ONNX graph + labels."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InvalidInput
from engine.session import SessionConfig, open_session
from engine.tokenization import TextTokenizer

logger = logging.getLogger(__name__)

_REQUIRED_INPUTS = {"input_ids", "attention_mask"}
_WARMUP_TEXTS = ["warm up", "a somewhat longer sentence to warm up a second sequence length in the same batch"]


class TextClassifier:
    """Loads ``model.onnx`` with the ``tokenizer.json`` and ``labels.json`` beside it.

    ``run`` maps texts to one row of probabilities per text, in ``labels`` order.
    """

    def __init__(
        self, model_path: Path, session_config: SessionConfig, labels: Sequence[str] | None = None, tokenizer_path: Path | None = None
    ) -> None:
        folder = model_path.parent
        tokenizer_path = tokenizer_path if tokenizer_path is not None else folder / "tokenizer.json"
        required = [model_path, tokenizer_path] + ([] if labels is not None else [folder / "labels.json"])
        for path in required:
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing (build the default models with `make models`)")
        self.labels: tuple[str, ...] = tuple(labels if labels is not None else json.loads((folder / "labels.json").read_text()))
        self.tokenizer = TextTokenizer.from_file(tokenizer_path)
        self._session = open_session(model_path, session_config)
        inputs = {i.name for i in self._session.get_inputs()}
        if not _REQUIRED_INPUTS <= inputs:
            raise ValueError(f"{model_path}: expected inputs {sorted(_REQUIRED_INPUTS)}, graph has {sorted(inputs)}")
        outputs = self._session.get_outputs()
        width = outputs[0].shape[-1]
        if isinstance(width, int) and width != len(self.labels):
            raise ValueError(f"{model_path}: output has {width} columns but labels.json lists {len(self.labels)} labels")
        self._output = outputs[0].name
        self._takes_token_types = "token_type_ids" in inputs

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def validate(self, inputs: Sequence[Any]) -> None:
        bad = [i for i, text in enumerate(inputs) if not isinstance(text, str)]
        if bad:
            raise InvalidInput("this model takes texts: every input must be a string", details={"indexes": bad[:20]})

    def run(self, texts: list[str]) -> np.ndarray:
        """Probabilities for each text, in input order; texts run in groups of similar length."""
        result = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for indexes, batch in self.tokenizer.encode_grouped(texts):
            feeds = batch.feeds()
            if self._takes_token_types:
                feeds["token_type_ids"] = np.zeros_like(batch.input_ids)
            result[indexes] = self._session.run([self._output], feeds)[0]
        return result

    def warm_up(self) -> None:
        """Run once so the first request does not pay for the runtime's lazy allocations."""
        for texts in (_WARMUP_TEXTS[:1], _WARMUP_TEXTS):
            self.run(texts)
