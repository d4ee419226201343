"""Loading one model version: fetch its files from their source, open them as its kind, warm up.

``LoadedModel`` is what the lifecycle hands out under a lease and what the predictor chain runs:
the version's identity, its kind's loaded instance, and the files it was made from (so that a
layer such as the result cache can key on their contents).

ONNX Runtime memory-maps external weights (``model.onnx.data``) and reads them for as long as
the session lives: a weights file truncated or rewritten in place under a loaded version would
kill the process with SIGBUS on its next request. So a version with external weights opens a
private copy, made in a folder of its own and removed once the session is open: the mapping
keeps the copy alive, and nothing else can reach it. Files on a read-only filesystem (a Lambda
image) cannot change and are opened where they are. A change to the files a version was
loaded from is still noticed (``LoadedModel.files_changed``) and shown in ``/health``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.kinds import ModelFiles, ModelKind, kind_named
from engine.registry import Registry, VersionSpec
from engine.session import SessionConfig
from engine.sources import LocalSource, ModelSource, S3Source, weights_name

logger = logging.getLogger(__name__)

STALE_COPY_S = 3600.0
"""A private copy folder older than this was left by a process that died while loading (a load takes seconds)."""


@dataclass(frozen=True)
class FileStamp:
    """What identifies one file's contents cheaply: its inode, size and modification time."""

    path: Path
    inode: tuple[int, int]
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        stat = path.stat()
        return cls(path=path, inode=(stat.st_dev, stat.st_ino), size=stat.st_size, mtime_ns=stat.st_mtime_ns)

    def changed(self) -> bool:
        """The file was replaced, written to, truncated or removed since the stamp."""
        try:
            return FileStamp.of(self.path) != self
        except OSError:
            return True


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One model version in memory. Compared by identity: a reloaded version is another object."""

    name: str
    version: str
    runtime: ModelKind
    files: tuple[Path, ...]
    """Every file the version was loaded from: the model, its weights and sidecars, in a stable order."""
    load_ms: float
    instances: int | None = None
    """The registry's cap on this version's concurrent batches (``instances:``); None: the pool's."""
    stamps: tuple[FileStamp, ...] = ()
    """The ``files`` as they were when the version was loaded."""

    def files_changed(self) -> bool:
        """Whether a file the version was loaded from changed on disk since (a few ``stat`` calls)."""
        return any(stamp.changed() for stamp in self.stamps)


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _remove_stale(into: Path) -> None:
    now = time.time()  # compared with file modification times: wall clock, not a duration
    for folder in into.glob(".load-*"):
        try:
            if now - folder.stat().st_mtime > STALE_COPY_S:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


@contextmanager
def private_copy(model: Path, beside: Sequence[str], into: Path) -> Iterator[Path]:
    """``model`` and the files ``beside`` it, copied into a new folder under ``into``, which is
    removed when the block ends (what the runtime mapped stays readable: the copy is unlinked,
    not truncated). Yields ``model`` itself, unchanged, when no copy can or need be made."""
    if _read_only(model):
        yield model
        return
    try:
        into.mkdir(parents=True, exist_ok=True)
        _remove_stale(into)
        folder = Path(tempfile.mkdtemp(prefix=".load-", dir=into))
    except OSError as exc:
        logger.warning("cannot make a private copy of %s in %s (%s): opening the files in place", model, into, exc)
        yield model
        return
    try:
        for name in (model.name, *beside):
            if (model.parent / name).is_file():
                shutil.copyfile(model.parent / name, folder / name)
        yield folder / model.name
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ModelLoader:
    """Opens the versions of one registry's models; one source per scheme, so S3 reuses one client."""

    def __init__(self, session_config: SessionConfig, cache_dir: Path) -> None:
        self._session_config = session_config
        self._cache_dir = cache_dir
        self._private_dir = cache_dir / ".private"  # no S3 bucket name starts with a dot
        """Where versions with external weights are copied to load (see the module docstring)."""
        self._s3: S3Source | None = None
        self._local_sources: dict[Path, LocalSource] = {}

    @property
    def gpu_requested(self) -> bool:
        """Whether the settings ask for a GPU provider: a version then running on CPU is a fallback."""
        return self._session_config.gpu_requested()

    def _source(self, registry: Registry, location: str) -> ModelSource:
        if location.startswith("s3://"):
            if self._s3 is None:
                self._s3 = S3Source(self._cache_dir)
            return self._s3
        return self._local_sources.setdefault(registry.base_dir, LocalSource(registry.base_dir))

    def load(self, registry: Registry, name: str, version: str) -> LoadedModel:
        """Fetch, open and warm one version (blocking). Raises whatever stops it; the caller records it."""
        started = time.perf_counter()
        model_spec = registry.models[name]
        spec: VersionSpec = model_spec.versions[version]
        kind = kind_named(model_spec.kind)
        labels = tuple(model_spec.labels) if model_spec.labels else None
        location = registry.resolve_path(spec.path)
        sidecars = kind.sidecars(spec, labels)
        # External weights (model.onnx.data) come along when the model has them.
        weights = weights_name(location)
        model_path = self._source(registry, location).fetch(location, sha256=spec.sha256, sidecars=sidecars, optional_sidecars=[weights])
        tokenizer_path = None
        if spec.tokenizer:
            tokenizer_location = registry.resolve_path(spec.tokenizer)
            tokenizer_path = self._source(registry, tokenizer_location).fetch(tokenizer_location, sha256=None, sidecars=())
        beside = sorted(p for p in (model_path.parent / n for n in (*sidecars, weights)) if p.is_file())
        files = (model_path, *beside, *([tokenizer_path] if tokenizer_path else []))
        stamps = tuple(FileStamp.of(path) for path in files)
        has_weights = (model_path.parent / weights).is_file()
        with private_copy(model_path, (*sidecars, weights), self._private_dir) if has_weights else _in_place(model_path) as opened:
            files_in = ModelFiles(model=opened, tokenizer=tokenizer_path, labels=labels)
            runtime = kind(files_in, self._session_config.with_threads(spec.intra_op_threads))
            runtime.warm_up()
        load_ms = (time.perf_counter() - started) * 1000.0
        loaded = LoadedModel(
            name=name, version=version, runtime=runtime, files=files, load_ms=load_ms, instances=spec.instances, stamps=stamps
        )
        logger.info("model %s %s ready in %.0f ms on %s", name, version, loaded.load_ms, runtime.providers)
        return loaded


@contextmanager
def _in_place(model: Path) -> Iterator[Path]:
    yield model
