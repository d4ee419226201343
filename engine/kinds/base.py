"""The extension point of model kinds: the ``ModelKind`` Protocol, and what every kind is given.

A kind is one class in one module of this package. The class says how a request carries its
inputs (``request_field``), which files sit beside the ONNX file (``sidecars``), what the
registry may say about it (``check_spec``) and what one input's result looks like
(``result_type``). An instance is one loaded version: it checks a request's inputs against
its limits and the graph's signature, runs batches, and turns an output row into a result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from engine.errors import PayloadTooLarge
from engine.results import InputResult, Output
from engine.session import SessionConfig

if TYPE_CHECKING:
    from engine.registry import ModelSpec, VersionSpec

MAX_DETAILS = 20
"""At most this many offending indexes are named in an error's details."""


@dataclass(frozen=True)
class Limits:
    """A request's bounds for one model: the registry's ``limits``, else the service settings."""

    max_inputs: int
    max_text_chars: int


@dataclass(frozen=True)
class ModelFiles:
    """One version's files, fetched to local disk: the ONNX file with its sidecars beside it."""

    model: Path
    tokenizer: Path | None = None
    """The registry's ``tokenizer`` location when it names one; else ``tokenizer.json`` beside the model."""
    labels: tuple[str, ...] | None = None
    """The registry's ``labels`` when it lists them; else ``labels.json`` beside the model."""

    def beside(self, name: str) -> Path:
        return self.model.parent / name


class ModelKind(Protocol):
    """One kind of model. The class attributes describe the kind; an instance is a loaded version."""

    name: ClassVar[str]
    """The registry's ``kind`` value."""
    request_field: ClassVar[str]
    """The request body field that carries this kind's inputs (``texts``, ``instances``)."""
    request_schema: ClassVar[Any]
    """The type of that field, e.g. ``list[str]``."""
    request_description: ClassVar[str]
    result_type: ClassVar[type[InputResult]]
    """The shape of one input's result."""

    labels: tuple[str, ...]
    """Output labels (empty for a kind whose output has none)."""
    width: int
    """Columns of one output row."""

    def __init__(self, files: ModelFiles, session_config: SessionConfig) -> None:
        """Open the version; raise (any exception) when its files do not make a model of this kind."""
        ...

    @classmethod
    def sidecars(cls, spec: VersionSpec, labels: tuple[str, ...] | None) -> tuple[str, ...]:
        """Files that must sit beside the model file, given the version and the registry's labels."""
        ...

    @classmethod
    def check_spec(cls, spec: ModelSpec) -> None:
        """Raise ``ValueError`` when the registry says something this kind cannot honour."""
        ...

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime execution providers the session uses."""
        ...

    def check(self, inputs: Sequence[Any], limits: Limits) -> None:
        """Raise ``InvalidInput`` (``PayloadTooLarge`` for a bound) when the inputs do not fit."""
        ...

    def run(self, inputs: list[Any]) -> np.ndarray:
        """Output rows, shape ``(len(inputs), width)``, in input order. Called on a batcher thread."""
        ...

    def warm_up(self) -> None:
        """Run once so the first request does not pay for the runtime's lazy allocations."""
        ...

    def result(self, item: Any, output: Output) -> InputResult:
        """One input's result."""
        ...

    def agrees(self, primary: np.ndarray, shadow: np.ndarray) -> bool:
        """Whether a shadow version's row says the same as the primary's (for shadow metrics)."""
        ...


@runtime_checkable
class WeighsInputs(Protocol):
    """A kind whose inputs differ in cost (texts: their tokens). The batcher budgets batches by
    ``input_cost``; a kind without it costs 1 per input."""

    def input_cost(self, item: Any) -> int:
        """About what one input costs to run, in the unit of MAX_BATCH_TOKENS; cheap to compute."""
        ...


@runtime_checkable
class RunsInPhases(Protocol):
    """A kind whose run prepares its inputs first (the text kinds tokenise): the batcher times
    both phases, for ``inference_batch_phase_ms`` and the request's trace spans. A kind without
    it reports its whole run as ``run``."""

    def run_phased(self, inputs: list[Any]) -> tuple[np.ndarray, float]:
        """``run``'s rows, and the ``time.monotonic()`` instant the inputs were prepared."""
        ...


def check_count(inputs: Sequence[Any], limits: Limits) -> None:
    if len(inputs) > limits.max_inputs:
        raise PayloadTooLarge(f"{len(inputs)} inputs in one request; the limit is {limits.max_inputs} (MAX_TEXTS_PER_REQUEST)")


def labels_of(files: ModelFiles) -> tuple[str, ...]:
    """The registry's labels, else ``labels.json`` beside the model."""
    if files.labels is not None:
        return files.labels
    return tuple(json.loads(files.beside("labels.json").read_text()))


def require_files(*paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (build the default models with `make models`)")


def label_sidecars(labels: tuple[str, ...] | None) -> tuple[str, ...]:
    return () if labels is not None else ("labels.json",)


def check_width(model: Path, output_name: str, width: object, labels: tuple[str, ...]) -> None:
    if isinstance(width, int) and width != len(labels):
        raise ValueError(f"{model}: output {output_name!r} has {width} columns but there are {len(labels)} labels")


def argmax_agrees(primary: np.ndarray, shadow: np.ndarray) -> bool:
    return bool(int(np.argmax(primary)) == int(np.argmax(shadow)))
