"""Model sources: where a registry version's model file and its sidecar files come from.

A version's ``path`` is a local path (relative to the registry file's folder, or absolute)
or an ``s3://bucket/prefix/model.onnx`` URI. Sidecars (``tokenizer.json``, ``labels.json``)
live in the same folder or prefix as the model file and are named by the caller.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

S3_SCHEME = "s3://"
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class ModelSourceError(Exception):
    """A model version's files cannot be provided; the message names the location and the reason."""


class ObjectNotFound(ModelSourceError):
    """The S3 object (or its bucket) does not exist."""


class ChecksumMismatch(ModelSourceError):
    """The model file's sha256 is not the one the registry expects."""


class ModelSource(Protocol):
    """Provides a model version's files as local files, whatever their origin."""

    def fetch(self, location: str, *, sha256: str | None, sidecars: Sequence[str], optional_sidecars: Sequence[str] = ()) -> Path:
        """Local path of the model file, with its sidecars beside it.

        ``location`` is the registry's ``path`` for the version. When ``sha256`` is given, the
        model file returned has exactly that digest (lower-case hex). Every sidecar named is
        required; ``optional_sidecars`` (such as external weights) are provided when they exist.
        Raises ``ModelSourceError`` (``ChecksumMismatch`` for a wrong digest).
        """
        ...


def weights_name(model_name: str) -> str:
    """The external-weights file of a model (``model.onnx`` -> ``model.onnx.data``), as the build writes it."""
    return model_name.rpartition("/")[2] + ".data"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sidecar_names(location: str, sidecars: Sequence[str]) -> None:
    for name in sidecars:
        if not name or name in {".", ".."} or "/" in name or "\\" in name:
            raise ModelSourceError(f"{location}: sidecar {name!r} must be a plain file name")


def _verify(location: str, path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumMismatch(f"{location}: sha256 mismatch: expected {expected.lower()}, got {actual}")


class LocalSource:
    """Model files on the local disk; relative locations are resolved against ``base_dir``."""

    def __init__(self, base_dir: Path) -> None:
        self._base_dir = base_dir

    def resolve(self, location: str) -> Path:
        path = Path(location)
        return path if path.is_absolute() else self._base_dir / path

    def fetch(self, location: str, *, sha256: str | None, sidecars: Sequence[str], optional_sidecars: Sequence[str] = ()) -> Path:
        _check_sidecar_names(location, [*sidecars, *optional_sidecars])
        model = self.resolve(location)
        if not model.is_file():
            raise ModelSourceError(f"{location}: model file {model} not found")
        missing = [str(model.parent / name) for name in sidecars if not (model.parent / name).is_file()]
        if missing:
            raise ModelSourceError(f"{location}: sidecar file(s) not found: {', '.join(missing)}")
        if sha256 is not None:
            _verify(location, model, sha256)
        return model


def parse_s3_uri(location: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``; keys that could escape the cache folder are refused."""
    if not location.startswith(S3_SCHEME):
        raise ModelSourceError(f"{location}: not an s3:// URI")
    bucket, _, key = location[len(S3_SCHEME) :].partition("/")
    if not bucket or not key:
        raise ModelSourceError(f"{location}: expected s3://bucket/key/to/model.onnx")
    if any(part in {"", ".", ".."} for part in key.split("/")):
        raise ModelSourceError(f"{location}: key segments must be non-empty and not '.' or '..'")
    return bucket, key


def _default_client() -> Any:
    import boto3  # imported here so local-only deployments never pay for it

    # A session per client: boto3's shared default session is not safe to build clients from
    # concurrently. Endpoint (AWS_ENDPOINT_URL[_S3]) and credentials come from the usual chain.
    return boto3.session.Session().client("s3")


# One lock per destination folder, shared by every S3Source in the process, so that concurrent
# fetches of the same version download it once.
_dest_locks: dict[Path, threading.Lock] = {}
_dest_locks_guard = threading.Lock()


def _lock_for(folder: Path) -> threading.Lock:
    with _dest_locks_guard:
        return _dest_locks.setdefault(folder, threading.Lock())


class S3Source:
    """Model files in S3, downloaded once into ``cache_dir/<bucket>/<prefix>/`` and reused from there.

    A cached file is reused when its sha256 matches (if one is given), otherwise when its size
    equals the object's ``ContentLength``. Downloads go to a temporary file in the same folder
    and are renamed into place, so a half-written file is never seen.
    """

    def __init__(self, cache_dir: Path, client_factory: Callable[[], Any] | None = None) -> None:
        self._cache_dir = cache_dir
        self._client_factory = client_factory or _default_client
        self._client: Any = None
        self._client_lock = threading.Lock()

    def _s3(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def fetch(self, location: str, *, sha256: str | None, sidecars: Sequence[str], optional_sidecars: Sequence[str] = ()) -> Path:
        _check_sidecar_names(location, [*sidecars, *optional_sidecars])
        bucket, key = parse_s3_uri(location)
        prefix, _, name = key.rpartition("/")
        folder = self._cache_dir.joinpath(bucket, *prefix.split("/")) if prefix else self._cache_dir / bucket
        with _lock_for(folder.resolve()):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ModelSourceError(f"{location}: cannot create the cache folder {folder}: {exc}") from exc
            model = self._ensure(bucket, key, folder / name, sha256=sha256)
            for sidecar in sidecars:
                self._ensure(bucket, f"{prefix}/{sidecar}" if prefix else sidecar, folder / sidecar, sha256=None)
            for sidecar in optional_sidecars:
                try:
                    self._ensure(bucket, f"{prefix}/{sidecar}" if prefix else sidecar, folder / sidecar, sha256=None)
                except ObjectNotFound:
                    logger.debug("%s: no optional %s", location, sidecar)
        return model

    def _ensure(self, bucket: str, key: str, dest: Path, *, sha256: str | None) -> Path:
        uri = f"{S3_SCHEME}{bucket}/{key}"
        size: int | None = None
        if sha256 is not None:
            if dest.is_file() and sha256_file(dest) == sha256.lower():
                logger.debug("%s: cached copy %s is valid", uri, dest)
                return dest
        else:
            size = self._content_length(uri, bucket, key)
            if dest.is_file() and dest.stat().st_size == size:
                logger.debug("%s: cached copy %s has the object's size", uri, dest)
                return dest
        self._download(uri, bucket, key, dest, sha256=sha256, size=size)
        return dest

    def _content_length(self, uri: str, bucket: str, key: str) -> int:
        try:
            head = self._s3().head_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise _as_source_error(uri, exc) from exc
        return int(head["ContentLength"])

    def _download(self, uri: str, bucket: str, key: str, dest: Path, *, sha256: str | None, size: int | None) -> None:
        # boto3 is loaded by now: download_fileobj is one of the methods it adds to the client.
        from boto3.exceptions import Boto3Error
        from s3transfer.exceptions import RetriesExceededError

        started = time.perf_counter()
        try:
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        except OSError as exc:
            raise ModelSourceError(f"{uri}: cannot write to the cache folder {dest.parent}: {exc}") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                try:
                    self._s3().download_fileobj(bucket, key, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                except (BotoCoreError, ClientError, Boto3Error, RetriesExceededError) as exc:
                    raise _as_source_error(uri, exc) from exc
                except OSError as exc:  # typically a full disk: /tmp on Lambda is 512 MB unless configured
                    raise ModelSourceError(f"{uri}: cannot write {tmp}: {exc}") from exc
            if size is not None and tmp.stat().st_size != size:
                raise ModelSourceError(f"{uri}: downloaded {tmp.stat().st_size} bytes, expected {size}")
            if sha256 is not None:
                _verify(uri, tmp, sha256)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("%s: downloaded %d bytes to %s in %.0f ms", uri, dest.stat().st_size, dest, (time.perf_counter() - started) * 1000.0)


def _as_source_error(uri: str, exc: Exception) -> ModelSourceError:
    """A boto error as a ModelSourceError that names the object."""
    code = str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""
    if code in _NOT_FOUND_CODES:
        return ObjectNotFound(f"{uri}: object not found ({code})")
    return ModelSourceError(f"{uri}: cannot download: {type(exc).__name__}: {exc}")
