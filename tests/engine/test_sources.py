"""Model sources: the local disk, and S3 through a real S3 API (moto in server mode) holding the built sentiment model."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from engine.kinds import ModelFiles
from engine.kinds.text_classification import TextClassifier
from engine.session import SessionConfig
from engine.sources import ChecksumMismatch, LocalSource, ModelSourceError, S3Source, sha256_file
from tests.conftest import V1_DIR, require_models
from tests.network import free_port

BUCKET = "models"
PREFIX = "sentiment/v1"
MODEL_URI = f"s3://{BUCKET}/{PREFIX}/model.onnx"
# The built models keep their weights in model.onnx.data; these tests name it as a sidecar.
SIDECARS = ("tokenizer.json", "labels.json", "model.onnx.data")
FILES = ("model.onnx", *SIDECARS)
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on localhost holding the built sentiment v1 files under ``PREFIX``."""
    require_models()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint, **CREDENTIALS)
        client.create_bucket(Bucket=BUCKET)
        for name in FILES:
            client.upload_file(str(V1_DIR / name), BUCKET, f"{PREFIX}/{name}")
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials, and no developer AWS configuration leaking in."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def endpoint(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The S3 server, found by the client through the standard AWS_ENDPOINT_URL variable."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return s3_endpoint


class CountingClients:
    """A client factory making ordinary boto3 clients that count the downloads each S3 key gets.

    A large object is fetched in ranged parts; a download is counted once, at its first part.
    """

    def __init__(self) -> None:
        self.downloads: Counter[str] = Counter()
        self.clients = 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        client = boto3.session.Session().client("s3")
        client.meta.events.register("before-parameter-build.s3.GetObject", self._on_get_object)
        with self._lock:
            self.clients += 1
        return client

    def _on_get_object(self, params: dict[str, Any], **_: Any) -> None:
        if str(params.get("Range", "bytes=0-")).startswith("bytes=0-"):
            with self._lock:
                self.downloads[params["Key"]] += 1


def _cache_files(cache_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*") if p.is_file())


def _expected_files() -> list[str]:
    return sorted(f"{BUCKET}/{PREFIX}/{name}" for name in FILES)


@pytest.fixture(scope="module")
def v1_sha256() -> str:
    require_models()
    return sha256_file(V1_DIR / "model.onnx")


# --- S3 ---------------------------------------------------------------------------------------


def test_fetch_downloads_model_and_sidecars_that_load_and_predict(endpoint: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    counting = CountingClients()
    model = S3Source(cache, client_factory=counting).fetch(MODEL_URI, sha256=None, sidecars=SIDECARS)

    assert model == cache / BUCKET / PREFIX / "model.onnx"
    assert _cache_files(cache) == _expected_files()  # nothing else: no temp files left behind
    for name in FILES:
        assert (model.parent / name).read_bytes() == (V1_DIR / name).read_bytes()
    assert counting.downloads == {f"{PREFIX}/{name}": 1 for name in FILES}

    classifier = TextClassifier(ModelFiles(model), SessionConfig(intra_op_threads=1))
    probabilities = classifier.run(["I love this product"])
    assert classifier.labels[int(np.argmax(probabilities[0]))] == "positive"


def test_client_is_created_lazily(endpoint: str, tmp_path: Path) -> None:
    counting = CountingClients()
    source = S3Source(tmp_path / "cache", client_factory=counting)
    assert counting.clients == 0
    source.fetch(MODEL_URI, sha256=None, sidecars=SIDECARS)
    source.fetch(MODEL_URI, sha256=None, sidecars=SIDECARS)
    assert counting.clients == 1


@pytest.mark.parametrize("with_sha256", [False, True], ids=["size-check", "sha256-check"])
def test_second_fetch_with_the_same_cache_does_not_download_again(endpoint: str, tmp_path: Path, v1_sha256: str, with_sha256: bool) -> None:
    cache = tmp_path / "cache"
    sha256 = v1_sha256 if with_sha256 else None
    first = S3Source(cache).fetch(MODEL_URI, sha256=sha256, sidecars=SIDECARS)
    inodes = {name: (first.parent / name).stat().st_ino for name in FILES}

    counting = CountingClients()  # a new source, as after a cold start with a warm /tmp
    second = S3Source(cache, client_factory=counting).fetch(MODEL_URI, sha256=sha256, sidecars=SIDECARS)

    assert second == first
    assert counting.downloads == {}
    assert {name: (second.parent / name).stat().st_ino for name in FILES} == inodes


def test_correct_sha256_passes(endpoint: str, tmp_path: Path, v1_sha256: str) -> None:
    model = S3Source(tmp_path).fetch(MODEL_URI, sha256=v1_sha256.upper(), sidecars=SIDECARS)
    assert sha256_file(model) == v1_sha256


def test_sha256_mismatch_raises_and_leaves_no_model_or_temp_file(endpoint: str, tmp_path: Path, v1_sha256: str) -> None:
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as caught:
        S3Source(cache).fetch(MODEL_URI, sha256=wrong, sidecars=SIDECARS)

    message = str(caught.value)
    assert MODEL_URI in message and wrong in message and v1_sha256 in message
    assert _cache_files(cache) == []


def test_mismatch_keeps_the_previous_valid_file(endpoint: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model = S3Source(cache).fetch(MODEL_URI, sha256=None, sidecars=SIDECARS)
    inode = model.stat().st_ino

    with pytest.raises(ChecksumMismatch):
        S3Source(cache).fetch(MODEL_URI, sha256="f" * 64, sidecars=SIDECARS)

    assert model.stat().st_ino == inode
    assert model.read_bytes() == (V1_DIR / "model.onnx").read_bytes()
    assert _cache_files(cache) == _expected_files()


def test_corrupted_cached_model_is_downloaded_again(endpoint: str, tmp_path: Path, v1_sha256: str) -> None:
    cache = tmp_path / "cache"
    model = S3Source(cache).fetch(MODEL_URI, sha256=v1_sha256, sidecars=SIDECARS)
    with model.open("r+b") as handle:  # same size, different bytes: only the checksum can tell
        handle.seek(1000)
        original = handle.read(16)
        handle.seek(1000)
        handle.write(bytes(b ^ 0xFF for b in original))
    assert sha256_file(model) != v1_sha256

    counting = CountingClients()
    again = S3Source(cache, client_factory=counting).fetch(MODEL_URI, sha256=v1_sha256, sidecars=SIDECARS)

    assert sha256_file(again) == v1_sha256
    assert counting.downloads == {f"{PREFIX}/model.onnx": 1}
    assert _cache_files(cache) == _expected_files()


def test_truncated_cached_sidecar_is_downloaded_again(endpoint: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model = S3Source(cache).fetch(MODEL_URI, sha256=None, sidecars=SIDECARS)
    (model.parent / "tokenizer.json").write_text("{}")

    counting = CountingClients()
    S3Source(cache, client_factory=counting).fetch(MODEL_URI, sha256=None, sidecars=SIDECARS)

    assert counting.downloads == {f"{PREFIX}/tokenizer.json": 1}
    assert (model.parent / "tokenizer.json").read_bytes() == (V1_DIR / "tokenizer.json").read_bytes()


def test_missing_model_object_names_the_uri(endpoint: str, tmp_path: Path) -> None:
    uri = f"s3://{BUCKET}/sentiment/v9/model.onnx"
    for sha256 in (None, "0" * 64):
        with pytest.raises(ModelSourceError, match=f"{uri}: object not found") as caught:
            S3Source(tmp_path / "cache").fetch(uri, sha256=sha256, sidecars=SIDECARS)
        assert not isinstance(caught.value, ChecksumMismatch)
    assert _cache_files(tmp_path / "cache") == []


def test_missing_sidecar_object_names_its_uri(endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=f"s3://{BUCKET}/{PREFIX}/vocab.txt: object not found"):
        S3Source(tmp_path).fetch(MODEL_URI, sha256=None, sidecars=("vocab.txt",))


def test_missing_bucket_names_the_uri(endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="s3://no-such-bucket/m/model.onnx: object not found"):
        S3Source(tmp_path).fetch("s3://no-such-bucket/m/model.onnx", sha256=None, sidecars=())


def test_concurrent_fetches_download_once(endpoint: str, tmp_path: Path, v1_sha256: str) -> None:
    cache = tmp_path / "cache"
    counting = CountingClients()
    sources = [S3Source(cache, client_factory=counting) for _ in range(4)]
    start = threading.Barrier(len(sources))
    results: list[Path] = []
    errors: list[BaseException] = []

    def fetch(source: S3Source) -> None:
        start.wait()
        try:
            results.append(source.fetch(MODEL_URI, sha256=v1_sha256, sidecars=SIDECARS))
        except BaseException as exc:  # reported by the assertion below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(source,)) for source in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert results == [cache / BUCKET / PREFIX / "model.onnx"] * len(sources)
    assert counting.downloads == {f"{PREFIX}/{name}": 1 for name in FILES}
    assert _cache_files(cache) == _expected_files()


@pytest.mark.parametrize(
    "location",
    ["s3://", "s3://bucket", "s3://bucket/", "s3://bucket/a/../../etc/model.onnx", "s3://bucket//model.onnx"],
)
def test_malformed_s3_uris_are_refused(location: str, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="s3://"):
        S3Source(tmp_path, client_factory=CountingClients()).fetch(location, sha256=None, sidecars=())


def test_sidecar_names_must_be_plain_file_names(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="'../labels.json' must be a plain file name"):
        S3Source(tmp_path).fetch(MODEL_URI, sha256=None, sidecars=("../labels.json",))


# --- local disk -------------------------------------------------------------------------------


def test_local_relative_location_resolves_against_base_dir(v1_sha256: str) -> None:
    base = V1_DIR.parent.parent
    location = str(V1_DIR.relative_to(base) / "model.onnx")
    assert LocalSource(base).fetch(location, sha256=v1_sha256, sidecars=SIDECARS) == V1_DIR / "model.onnx"


def test_local_absolute_location_ignores_base_dir(tmp_path: Path) -> None:
    require_models()
    model = V1_DIR / "model.onnx"
    assert LocalSource(tmp_path).fetch(str(model), sha256=None, sidecars=SIDECARS) == model


def test_local_checksum_mismatch_names_location_expected_and_actual(v1_sha256: str) -> None:
    location = str(V1_DIR / "model.onnx")
    wrong = "ab" * 32
    with pytest.raises(ChecksumMismatch) as caught:
        LocalSource(Path("/")).fetch(location, sha256=wrong, sidecars=())
    message = str(caught.value)
    assert location in message and wrong in message and v1_sha256 in message


def test_local_missing_model_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=f"model file {tmp_path / 'v1' / 'model.onnx'} not found"):
        LocalSource(tmp_path).fetch("v1/model.onnx", sha256=None, sidecars=())


def test_local_missing_sidecar_names_it(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelSourceError, match=f"sidecar file\\(s\\) not found: {tmp_path / 'labels.json'}"):
        LocalSource(tmp_path).fetch("model.onnx", sha256=None, sidecars=SIDECARS)


def test_optional_sidecars_come_along_when_they_exist(endpoint: str, tmp_path: Path) -> None:
    counting = CountingClients()
    model = S3Source(tmp_path, client_factory=counting).fetch(
        MODEL_URI, sha256=None, sidecars=("tokenizer.json", "labels.json"), optional_sidecars=("model.onnx.data", "absent.bin")
    )
    assert (model.parent / "model.onnx.data").stat().st_size == (V1_DIR / "model.onnx.data").stat().st_size
    assert not (model.parent / "absent.bin").exists()
    TextClassifier(ModelFiles(model), SessionConfig())  # the graph finds its weights


# --- through the engine: a registry version on S3 ----------------------------------------------


@pytest.mark.parametrize("checksum", ["right", "wrong"])
def test_registry_version_on_s3_loads_or_is_rejected_by_checksum(endpoint: str, tmp_path: Path, v1_sha256: str, checksum: str) -> None:
    import asyncio

    from engine.factory import build_engine
    from engine.schemas import PredictRequest
    from tests.conftest import make_settings
    from tests.registries import V1_MODEL, sentiment, write_registry

    sha = v1_sha256 if checksum == "right" else "0" * 64
    versions = {"v1": {"path": V1_MODEL}, "s3": {"path": f"s3://{BUCKET}/{PREFIX}/model.onnx", "sha256": sha, "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout={"type": "shadow", "target_version": "s3"})})
    engine = build_engine(make_settings(model_registry_path=registry, model_cache_dir=tmp_path / "cache"))
    engine.load()
    try:
        states = {m.version: (m.state, m.error) for m in engine.health().models}
        if checksum == "right":
            assert states["s3"] == ("ready", None)
            response = asyncio.run(engine.predict(PredictRequest(texts=["I love this product"], model_version="s3")))
            assert response.results[0].prediction == "positive"
        else:
            state, error = states["s3"]
            assert state == "failed" and "ChecksumMismatch" in str(error)
            assert engine.health().status == "degraded"
            assert not (tmp_path / "cache" / BUCKET / PREFIX / "model.onnx").exists()
    finally:
        engine.close()
